package agent_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/moha-project/moha/internal/agent"
	"github.com/moha-project/moha/internal/config"
	"github.com/moha-project/moha/internal/freeport"
	"github.com/moha-project/moha/internal/launch"
	"github.com/moha-project/moha/internal/testkit"
)

// TestRefusesBrokerWithoutLogTopic: a broker that does not publish its log
// on $SYS topics leaves the agent blind to interest; the agent says so and
// stops instead of running half-started.
func TestRefusesBrokerWithoutLogTopic(t *testing.T) {
	dir := t.TempDir()
	brokerAddr, err := freeport.Addr("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := config.SplitHostPort(brokerAddr)
	conf := filepath.Join(dir, "mosquitto.conf")
	text := "listener " + strconv.Itoa(port) + " 127.0.0.1\nallow_anonymous true\nlog_dest stderr\n"
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	bin, err := launch.FindBinary("mosquitto")
	if err != nil {
		testkit.SkipUnavailable(t, "%v", err)
	}
	p, err := launch.Start("mosquitto", filepath.Join(dir, "mosquitto.log"), bin, "-c", conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := launch.WaitTCP(ctx, brokerAddr, p); err != nil {
		t.Fatal(err)
	}
	c := config.Default()
	c.Secret = "0123456789abcdef0123456789"
	addrs, err := freeport.Addrs("127.0.0.1", 2)
	if err != nil {
		t.Fatal(err)
	}
	c.Nodes = []config.Node{{Name: "solo", Link: addrs[0], HTTP: addrs[1], DataDir: dir}}
	c.Nodes[0].Broker.Address = brokerAddr
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Options{Cluster: &c, Node: "solo", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	err = a.Run(ctx)
	if !errors.Is(err, agent.ErrBrokerLogging) {
		t.Fatalf("Run = %v, want ErrBrokerLogging", err)
	}
}
