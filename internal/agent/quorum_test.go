package agent_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/moha-project/moha/internal/launch"
)

// TestTwoNodesStayAvailable (issue 14 §5): in a two-node cluster behind a
// real HAProxy, the node a client was on dies (agent and broker); the
// survivor stays ready (quorum none is the two-node default: a majority of
// two would be both) and the client, reconnecting through HAProxy, is
// served there within a few check intervals.
func TestTwoNodesStayAvailable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := launch.Up(ctx, launch.Options{Nodes: 2, LBPort: 0, Dir: t.TempDir(), NewAgent: newAgent, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	for _, n := range c.Config.Nodes {
		waitSettled(t, c, n.Name)
	}
	const id = "two-node-client"
	first := connect(t, c.LB, id)
	home := ""
	waitFor(t, 5*time.Second, "the client's node to see it", func() bool {
		for _, n := range c.Config.Nodes {
			if _, ok := agentOf(c, n.Name).Clients()[id]; ok {
				home = n.Name
				return true
			}
		}
		return false
	})
	first.drop()
	survivor := "node1"
	if home == "node1" {
		survivor = "node2"
	}
	c.StopAgent(home)
	c.Broker(home).Stop(5 * time.Second)
	start := time.Now()
	waitFor(t, 15*time.Second, "the client served through HAProxy by "+survivor, func() bool {
		return servedThrough(c.LB, id)
	})
	t.Logf("served by %s %v after %s died (check interval %v)", survivor, time.Since(start).Round(10*time.Millisecond), home, c.Config.LoadBalancers.CheckInterval)
	if ok, reason := agentOf(c, survivor).Ready(); !ok {
		t.Fatalf("the survivor is not ready: %s", reason)
	}
}

// servedThrough reports whether a client connecting through the load
// balancer at addr gets a session on which its own publish comes back.
func servedThrough(addr, id string) bool {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	got := make(chan struct{}, 1)
	pc := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(paho.PublishReceived) (bool, error) {
			select {
			case got <- struct{}{}:
			default:
			}
			return true, nil
		}}})
	defer pc.TerminateConnectionForTest()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if ack, err := pc.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}); err != nil || ack.ReasonCode != 0 {
		return false
	}
	if _, err := pc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "two/node", QoS: 1}}}); err != nil {
		return false
	}
	if _, err := pc.Publish(ctx, &paho.Publish{Topic: "two/node", QoS: 1, Payload: []byte("x")}); err != nil {
		return false
	}
	select {
	case <-got:
		return true
	case <-ctx.Done():
		return false
	}
}
