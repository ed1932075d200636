package lab

import (
	"fmt"
	"testing"
	"time"
)

// inFlightBound is how long before a broker's death a message it acknowledged may
// still have been on its agent's way to the peers (and so be lost with it).
const inFlightBound = 500 * time.Millisecond

// drillBrokerKill (drill 1) SIGKILLs mosquitto on node2 under steady QoS 1 load from
// clients behind the floating IP that reconnect and resubscribe. It measures the time
// until every publisher→subscriber flow delivers again and what was lost before that;
// after a flow is restored nothing may be lost.
func (l *lab) drillBrokerKill(t *testing.T) {
	ld := l.newLoad("kill", 20*time.Millisecond)
	defer ld.stop()
	vip := floatingIP + ":1883"
	// Enough clients that some land on node2 (placement is HAProxy's hash of the id).
	for i := 1; i <= 12 && (i <= 6 || l.countOn("node2", ld.subIDs) < 2); i++ {
		id := fmt.Sprintf("lab-kill-sub%d", i)
		ld.addSubscriber(vip, id, 0)
		l.waitPlaced(t, []string{id})
	}
	for i := 1; i <= 8 && (i <= 3 || l.countOn("node2", ld.pubIDs) < 1); i++ {
		id := fmt.Sprintf("lab-kill-pub%d", i)
		ld.addPublisher(vip, id)
		l.waitPlaced(t, []string{id})
	}
	l.figure(t, "subscribers", l.placementFigure(ld.subIDs))
	l.figure(t, "publishers", l.placementFigure(ld.pubIDs))
	warm := time.Now()
	waitFor(t, 10*time.Second, "every flow delivering", func() bool { return ld.flowing(warm) })
	ld.countFrom(warm)

	onNode2 := map[string]bool{}
	for _, id := range ld.subIDs {
		if at, _ := l.place.of(id); at.Node == "node2" {
			onNode2[id] = true
		}
	}
	kill := time.Now()
	ld.setMark(kill)
	l.kill("mosquitto-node2")
	back, ok := pollUntil(30*time.Second, func() bool { _, ok := ld.restored(); return ok })
	if !ok {
		t.Fatalf("flows not all restored %v after the kill (subscribers %s, publishers %s)", back,
			l.placementFigure(ld.subIDs), l.placementFigure(ld.pubIDs))
	}
	served, _ := ld.restored()
	l.figure(t, "served_again_s", served)
	time.Sleep(time.Second) // steady load after recovery: what must arrive in full
	ld.stopPub.Store(true)
	ld.pubWG.Wait()
	ld.settle(5 * time.Second)
	tl := ld.tally()
	l.figure(t, "acked", tl.acked)
	l.figure(t, "expected_deliveries", tl.expected)
	l.figure(t, "lost_before_reconnect", tl.lostOutage)
	l.figure(t, "lost_before_reconnect_by_moved_subscribers", ld.lostOutageOf(onNode2))
	l.figure(t, "lost_after_reconnect", tl.lostAfter)
	l.figure(t, "duplicated", tl.duplicated)
	if tl.lostAfter != 0 {
		t.Errorf("%d messages lost after reconnection, e.g. %v", tl.lostAfter, tl.missing)
	}
	// The outage loses only what one broker's death must lose: messages for the
	// clean-session subscribers that were on node2 (until they reconnected), and
	// what node2's broker had acknowledged to its publishers but its agent had not
	// yet forwarded (sent just before the kill). A flow between two surviving
	// nodes loses nothing.
	pubsOn2 := map[string]bool{}
	for _, id := range ld.pubIDs {
		if at, _ := l.place.of(id); at.Node == "node2" {
			pubsOn2[id] = true
		}
	}
	survivors, oldest := ld.lostOutageWhere(func(sub, pub string) bool { return !onNode2[sub] && !pubsOn2[pub] })
	l.figure(t, "lost_between_surviving_nodes", survivors)
	if survivors != 0 {
		t.Errorf("%d messages lost between publishers and subscribers on surviving nodes (oldest sent %v before the kill)", survivors, kill.Sub(oldest))
	}
	fromNode2, oldest := ld.lostOutageWhere(func(sub, pub string) bool { return !onNode2[sub] && pubsOn2[pub] })
	l.figure(t, "lost_in_flight_from_node2", fromNode2)
	if fromNode2 > 0 && kill.Sub(oldest) > inFlightBound {
		t.Errorf("a message node2's broker acknowledged %v before the kill was lost: more than what was in flight (%v)", kill.Sub(oldest), inFlightBound)
	}
	ld.stop()

	l.startBroker("node2")
	l.waitReady(t, "node2", true, 20*time.Second)
	// The log watcher may have reconnected before the agent did: the agent cannot know
	// its subscription and stays degraded until it reconnects.
	l.watch(l.place, "node2")
	// Not required (HAProxy only needs /readyz), but reported: a degraded node
	// advertises # and draws every message. Seen to stay degraded ("lost the broker
	// session") for over 20 s in some runs: an agent issue to look at.
	settled, ok := pollUntil(10*time.Second, func() bool {
		s, err := l.status("node2")
		return err == nil && s.Ready && !s.Degraded
	})
	l.figure(t, "node2_settled_after_broker_restart", fmt.Sprintf("%v after %v", ok, settled.Round(time.Millisecond)))
	l.idsOn(t, "node2", 1) // HAProxy sends clients to node2 again
}
