package lab

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// failoverTarget is the target for the floating IP to move.
const failoverTarget = 3 * time.Second

// drillLBFailover (drill 3) takes the active load balancer out three ways — SIGKILL
// haproxy, SIGKILL keepalived, lb1's link down — and measures how long until the
// floating IP is on lb2 and until a client that was connected through lb1 is
// connected again, through lb2.
func (l *lab) drillLBFailover(t *testing.T) {
	cases := []struct {
		name    string
		fail    func()
		restore func()
	}{
		{"KillHAProxy", func() { l.kill("haproxy-lb1") }, func() { l.startHAProxy("lb1") }},
		{"KillKeepalived", func() { l.kill("keepalived-lb1") }, func() { l.startKeepalived("lb1") }},
		{"LinkDown", func() { l.mustIP("lb1", "link", "set", "eth0", "down") }, func() {
			l.mustIP("lb1", "link", "set", "eth0", "up")
			// Bringing the link down dropped the addresses' routes, not the address itself;
			// keepalived takes over again once VRRP runs on the link.
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l.waitVIPOn("lb1", 15*time.Second)
			l.lbFailover(t, tc.fail)
			tc.restore()
			l.waitVIPOn("lb1", 15*time.Second)
			l.waitLBServes(10 * time.Second)
		})
	}
}

func (l *lab) lbFailover(t *testing.T, fail func()) {
	id := fmt.Sprintf("lab-lb-%s", t.Name()[len("TestLab/LBFailover/"):])
	c := l.startClient(floatingIP+":1883", id, 0, nil, nil)
	defer c.stop()
	if _, err := c.current(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, id+" seen by a broker", func() bool { _, ok := l.place.of(id); return ok })
	if at, _ := l.place.of(id); at.From != lb1IP {
		t.Fatalf("%s connected from %s, want through lb1 (%s)", id, at.From, lb1IP)
	}
	before := c.connectCount()

	// The client publishes every 50 ms so it notices a dead connection at once (a
	// connection through a load balancer that lost the address only fails when used).
	var stop atomic.Bool
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		for !stop.Load() {
			_ = c.publish("lab/ping", []byte("ping"), false, 200*time.Millisecond)
			time.Sleep(50 * time.Millisecond)
		}
	}()
	defer func() { stop.Store(true); <-pubDone }()

	start := time.Now()
	fail()
	vip, ok := pollUntil(10*time.Second, func() bool { return l.hasVIP("lb2") })
	if !ok {
		t.Fatalf("floating IP not on lb2 after %v", vip)
	}
	l.figure(t, "vip_on_lb2_s", vip)
	_, ok = pollUntil(10*time.Second, func() bool {
		at, _ := l.place.of(id)
		return c.connectCount() > before && at.From == lb2IP
	})
	if !ok {
		at, _ := l.place.of(id)
		t.Fatalf("client did not reconnect through lb2 within 10s (connects %d→%d, last from %s)", before, c.connectCount(), at.From)
	}
	at, _ := l.place.of(id)
	l.figure(t, "client_reconnected_s", at.At.Sub(start))
	l.figure(t, "client_reconnected_via", "lb2 -> "+at.Node)
	// A new client is served through the floating IP too.
	if err := l.probeConnect(floatingIP+":1883", id+"-new", 2*time.Second); err != nil {
		t.Errorf("new client through the floating IP: %v", err)
	}
	if vip > failoverTarget {
		t.Errorf("floating IP took %v to move, target %v", vip, failoverTarget)
	}
}
