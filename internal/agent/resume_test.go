package agent_test

import (
	"github.com/moha-project/moha/internal/agent"
	"testing"
	"time"
)

// TestLogSessionResumes: the log session drops while nothing happens on the
// broker (here a client with its id and clean start 0 takes it over for a
// moment, leaving the session in place); the agent reconnects, resumes the
// session and its table returns to what it was, without over-stating.
func TestLogSessionResumes(t *testing.T) {
	c := startCluster(t, 2)
	sub := connect(t, addr(c, "node2"), "resume-sub", persistent(300))
	sub.subscribe("resume/#", 1)
	peerKnows(t, c, "node1", "node2", "resume/#", true)
	before := metricSum(t, c.MustNode("node2").HTTP, "moha_broker_session_losses_total")
	kicker := connect(t, addr(c, "node2"), c.Agent("node2").ClientIDs()[agent.RoleLog], persistent(300))
	kicker.disconnect()
	waitFor(t, 5*time.Second, "node2 to notice the loss", func() bool {
		return metricSum(t, c.MustNode("node2").HTTP, "moha_broker_session_losses_total") > before
	})
	waitSettled(t, c, "node2") // a session it knew would be stale, and it degraded, had lines been missed
	peerKnows(t, c, "node1", "node2", "resume/#", true)
	if st := c.Agent("node2").Status(); st.Interest.Stale != 0 {
		t.Fatalf("resumed, yet %d sessions stale: %s", st.Interest.Stale, st.DegradedReason)
	}
}
