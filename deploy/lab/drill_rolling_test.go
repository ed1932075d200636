package lab

import (
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// drillRollingRestart (drill 5) restarts the nodes one at a time (agent and broker
// stopped with SIGTERM, so mosquitto saves its persistence) under QoS 1 load through
// the floating IP. Subscribers have persistent sessions; the ones on the restarting
// node reconnect elsewhere meanwhile and are sent back to their own node once it is
// up. Every acknowledged message must reach every subscriber.
func (l *lab) drillRollingRestart(t *testing.T) {
	vip := floatingIP + ":1883"
	// The drill starts from a whole cluster. Every node linked to every other:
	// after the partition drill one link may still wait out its redial backoff.
	// And every node up in HAProxy's view: a node that a previous drill took
	// out comes back only after its checks rise, and a client placed meanwhile
	// gets a neighbour as its "own" node.
	for _, n := range nodeNames {
		l.waitLinked(t, n, 20*time.Second)
	}
	for _, n := range nodeNames {
		l.idsOn(t, n, 1)
	}
	ld := l.newLoad("roll", 50*time.Millisecond)
	defer ld.stop()
	for i := 1; i <= 3; i++ {
		ld.addSubscriber(vip, fmt.Sprintf("lab-roll-sub%d", i), 600)
		ld.addPublisher(vip, fmt.Sprintf("lab-roll-pub%d", i))
	}
	l.waitPlaced(t, append(append([]string{}, ld.subIDs...), ld.pubIDs...))
	home := map[string]string{}
	for _, id := range ld.subIDs {
		at, _ := l.place.of(id)
		home[id] = at.Node
	}
	l.figure(t, "subscribers", l.placementFigure(ld.subIDs))
	warm := time.Now()
	waitFor(t, 10*time.Second, "every flow delivering", func() bool { return ld.flowing(warm) })
	ld.countFrom(warm)

	start := time.Now()
	moved := 0
	for _, node := range nodeNames {
		began := time.Now()
		l.stopRole("agent-" + node)
		l.stopRole("mosquitto-" + node)
		l.startBroker(node)
		l.startAgent(node)
		l.waitReady(t, node, true, 20*time.Second)
		l.idsOn(t, node, 1) // HAProxy sends clients to node again
		l.figure(t, node+"_restart_s", time.Since(began))
		for i, id := range ld.subIDs {
			if at, _ := l.place.of(id); home[id] == node && at.Node != node {
				moved++
				l.sendHome(t, ld.subs[i], id, node) // back to its own node and its session there
			}
		}
	}
	l.figure(t, "rolling_restart_s", time.Since(start))
	l.figure(t, "subscriber_moves", moved)
	time.Sleep(time.Second)
	ld.stopPub.Store(true)
	ld.pubWG.Wait()
	// Every acked message is due to every subscriber (mark unset: all count as "after").
	ld.settle(10 * time.Second)
	for _, id := range ld.subIDs {
		if at, _ := l.place.of(id); at.Node != home[id] {
			t.Errorf("%s ended on %s, not its own node %s", id, at.Node, home[id])
		}
	}
	tl := ld.tally()
	l.figure(t, "acked", tl.acked)
	l.figure(t, "expected_deliveries", tl.expected)
	l.figure(t, "lost", tl.lostAfter)
	l.figure(t, "duplicated", tl.duplicated)
	ld.stop()
	for _, id := range ld.subIDs {
		l.endSession(t, vip, id)
	}
	l.watch(l.place, "node1")
	l.watch(l.place, "node2")
	l.watch(l.place, "node3")
	for _, n := range nodeNames {
		l.waitSettled(t, n, 20*time.Second)
	}
	if tl.lostAfter != 0 {
		t.Errorf("%d acknowledged messages never reached a persistent subscriber, e.g. %v", tl.lostAfter, tl.missing)
	}
}

// stopRole stops role's process with SIGTERM (SIGKILL after 5 s) and forgets it.
func (l *lab) stopRole(role string) {
	l.mu.Lock()
	p := l.procs[role]
	delete(l.procs, role)
	l.mu.Unlock()
	if p != nil {
		p.Stop(5 * time.Second)
	}
}

// sendHome drops id's connection until HAProxy places it on home again: a
// node HAProxy marked down during its restart is used again only after its
// checks rise (rise 2, 1 s apart), and meanwhile the id still goes elsewhere.
func (l *lab) sendHome(t *testing.T, c *client, id, home string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		dropped := time.Now()
		c.drop()
		waitFor(t, 10*time.Second, id+" reconnected", func() bool {
			at, _ := l.place.of(id)
			return at.At.After(dropped)
		})
		at, _ := l.place.of(id)
		if at.Node == home {
			return
		}
		t.Logf("%s reconnected on %s (from %s), not %s: dropping it again", id, at.Node, at.From, home)
	}
	t.Errorf("%s not back on %s after 15 s", id, home)
}

// drop closes the client's connection (keeping its session); it reconnects.
func (c *client) drop() {
	c.mu.Lock()
	pc := c.pc
	c.mu.Unlock()
	if pc != nil {
		_ = pc.Disconnect(&paho.Disconnect{})
	}
}

// endSession removes id's persistent session: a clean start with no expiry.
func (l *lab) endSession(t *testing.T, addr, id string) {
	pc, err := l.connectOnce(addr, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 10}, nil, 2*time.Second)
	if err != nil {
		t.Logf("end session %s: %v", id, err)
		return
	}
	_ = pc.Disconnect(&paho.Disconnect{})
}
