package launch_test

import (
	"context"
	"errors"
	"testing"

	"github.com/moha-project/moha/internal/launch"
)

// TestUpNeedsAWayToRunAgents: without AgentBinary or NewAgent, Up refuses
// before it starts anything, instead of failing later at the first agent.
func TestUpNeedsAWayToRunAgents(t *testing.T) {
	c, err := launch.Up(context.Background(), launch.Options{Nodes: 1, LBPort: -1, Dir: t.TempDir()})
	if !errors.Is(err, launch.ErrNoAgent) {
		t.Fatalf("Up without AgentBinary or NewAgent: err %v, want ErrNoAgent", err)
	}
	if c != nil {
		t.Fatal("Up returned a cluster along with its error")
	}
}
