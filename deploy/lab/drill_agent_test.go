package lab

import (
	"fmt"
	"testing"
	"time"
)

// drillAgentKill (drill 2) SIGKILLs the agent on node2: HAProxy must stop sending new
// clients there (its /readyz check fails), while a subscriber already connected to
// node2 through the load balancer stays connected and, once the agent is back,
// receives messages published on node1 again.
func (l *lab) drillAgentKill(t *testing.T) {
	vip := floatingIP + ":1883"
	ids := l.idsOn(t, "node2", 2)
	subID, newID := ids[0], ids[1]
	ld := l.newLoad("agent", 50*time.Millisecond)
	defer ld.stop()
	ld.addSubscriber(vip, subID, 0)
	ld.addPublisher(nodeIPs["node1"]+":1883", "lab-agent-pub1")
	warm := time.Now()
	waitFor(t, 10*time.Second, "node1→node2 flow delivering", func() bool { return ld.flowing(warm) })
	ld.countFrom(warm)
	if at, _ := l.place.of(subID); at.Node != "node2" {
		t.Fatalf("subscriber %s on %s, want node2", subID, at.Node)
	}

	kill := time.Now()
	l.kill("agent-node2")
	moved, ok := pollUntil(15*time.Second, func() bool {
		if l.probeConnect(vip, newID, time.Second) != nil {
			return false
		}
		at, _ := l.place.of(newID)
		return at.At.After(kill) && at.Node != "node2"
	})
	if !ok {
		t.Fatalf("new client %s still sent to node2 %v after its agent died", newID, moved)
	}
	l.figure(t, "new_clients_moved_s", moved)
	inter := l.cluster.LoadBalancers.CheckInterval.Std()
	if limit := 3 * inter; moved > limit { // fall 2 checks, plus up to one interval of phase
		t.Errorf("HAProxy took %v to stop sending clients to node2, want within %v (check interval %v, fall 2)", moved, limit, inter)
	}
	time.Sleep(time.Second) // the agent stays down a while under load

	restart := time.Now()
	ld.setMark(restart)
	l.startAgent("node2")
	back, ok := pollUntil(20*time.Second, func() bool { _, ok := ld.restored(); return ok })
	if !ok {
		t.Fatalf("existing subscriber on node2 got nothing from node1 %v after the agent restarted", back)
	}
	l.figure(t, "agent_down_s", restart.Sub(kill))
	l.figure(t, "existing_subscriber_served_after_restart_s", back)
	if n := ld.subs[0].connectCount(); n != 1 {
		t.Errorf("existing subscriber reconnected (%d connects): its connection should survive the agent", n)
	}
	ld.stopPub.Store(true)
	ld.pubWG.Wait()
	ld.settle(5 * time.Second)
	tl := ld.tally()
	l.figure(t, "acked", tl.acked)
	l.figure(t, "lost_while_agent_down", tl.lostOutage)
	l.figure(t, "lost_after_restart", tl.lostAfter)
	l.figure(t, "duplicated", tl.duplicated)
	if tl.lostAfter != 0 {
		t.Errorf("%d messages lost after the agent restarted, e.g. %v", tl.lostAfter, tl.missing)
	}
	// node1 buffers for node2 while its agent is away and resends what node2 had
	// not acknowledged (it acknowledges only what its broker accepted): nothing
	// published on node1 may be lost for the subscriber that stayed on node2.
	if tl.lostOutage != 0 {
		t.Errorf("%d messages lost while the agent was down (killed %s, restarted %s), want 0: %v",
			tl.lostOutage, kill.Format("15:04:05.000"), restart.Format("15:04:05.000"), tl.missingOutage)
	}
	// The restarted agent cannot know what the subscriber that connected before it
	// subscribed to: it advertises everything (degraded) until that session ends.
	if s, err := l.status("node2"); err == nil {
		l.figure(t, "node2_degraded_while_old_subscriber_stays", s.Degraded)
	}
	ld.stop()
	l.watch(l.place, "node2")
	l.waitSettled(t, "node2", 20*time.Second)
}

// idsOn finds n client ids that HAProxy sends to node, probing through the floating
// IP for up to 15 s (node may just have come back and wait for HAProxy's rise checks).
func (l *lab) idsOn(t *testing.T, node string, n int) []string {
	t.Helper()
	// The node's log watcher must be subscribed again (after a broker restart
	// it reconnects on its own) or the probes' connect lines go unseen.
	if w := l.place.watchers[node]; w != nil {
		if _, err := w.current(10 * time.Second); err != nil {
			t.Fatalf("log watcher on %s: %v", node, err)
		}
	}
	var ids []string
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; len(ids) < n && time.Now().Before(deadline); i++ {
		id := fmt.Sprintf("lab-%s-%s-%d", t.Name()[len("TestLab/"):], node, i)
		if err := l.probeConnect(floatingIP+":1883", id, 2*time.Second); err != nil {
			t.Fatalf("probe %s: %v", id, err)
		}
		l.waitPlaced(t, []string{id})
		if at, _ := l.place.of(id); at.Node == node {
			ids = append(ids, id)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(ids) < n {
		t.Fatalf("found only %d of %d client ids HAProxy sends to %s", len(ids), n, node)
	}
	return ids
}
