package lab

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// partitionFor is how long node3 is cut off from node1 and node2.
const partitionFor = 10 * time.Second

// convergeTarget is the bound for cross-node delivery to resume after healing.
const convergeTarget = 5 * time.Second

// partition cuts (or, with heal, restores) all traffic between node3 and node1/node2
// with blackhole routes; both load balancers and the client still reach every node.
func (l *lab) partition(heal bool) {
	op := "add"
	if heal {
		op = "del"
	}
	l.mustIP("node3", "route", op, "blackhole", nodeIPs["node1"]+"/32")
	l.mustIP("node3", "route", op, "blackhole", nodeIPs["node2"]+"/32")
	l.mustIP("node1", "route", op, "blackhole", nodeIPs["node3"]+"/32")
	l.mustIP("node2", "route", op, "blackhole", nodeIPs["node3"]+"/32")
}

// drillPartition (drill 4) partitions node3 from the majority for 10 s with clients
// connected directly to node1 and node3: each side keeps serving its own clients,
// node3's /readyz fails while alone, and after healing interest, retained messages
// and cross-node delivery converge within 5 s.
func (l *lab) drillPartition(t *testing.T) {
	n1, n3 := nodeIPs["node1"]+":1883", nodeIPs["node3"]+":1883"
	ld := l.newLoad("part", 50*time.Millisecond)
	defer ld.stop()
	ld.addSubscriber(n1, "lab-part-sub1", 0)
	ld.addSubscriber(n3, "lab-part-sub3", 0)
	ld.addPublisher(n1, "lab-part-pub1")
	ld.addPublisher(n3, "lab-part-pub3")
	warm := time.Now()
	waitFor(t, 10*time.Second, "every flow delivering", func() bool { return ld.flowing(warm) })
	ld.countFrom(warm)

	healed := false
	t.Cleanup(func() {
		if !healed {
			l.partition(true)
		}
	})
	cut := time.Now()
	l.partition(false)
	alone, ok := pollUntil(partitionFor, func() bool { return l.readyz("node3") != http.StatusOK })
	if !ok {
		t.Errorf("node3 /readyz still 200 %v into the partition", alone)
	}
	l.figure(t, "node3_unready_s", alone)

	// While cut: a new interest on node3, retained messages written on both sides.
	lateGot := make(chan struct{}, 1)
	late := l.startClient(n3, "lab-part-late", 0, []string{"lab/late/#"}, func(*paho.Publish) {
		select {
		case lateGot <- struct{}{}:
		default:
		}
	})
	defer late.stop()
	if _, err := late.current(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	l.publishRetained(t, n1, "lab/retained/side1", "from node1")
	l.publishRetained(t, n3, "lab/retained/side3", "from node3")
	defer l.publishRetained(t, n1, "lab/retained/side1", "")
	defer l.publishRetained(t, n1, "lab/retained/side3", "")

	time.Sleep(time.Until(cut.Add(partitionFor / 2)))
	local := time.Now()
	time.Sleep(time.Until(cut.Add(partitionFor)))
	if !ld.delivered("lab-part-sub1", "lab-part-pub1", local) || !ld.delivered("lab-part-sub3", "lab-part-pub3", local) {
		t.Errorf("a side stopped serving its own clients during the partition")
	}
	if code := l.readyz("node1"); code != http.StatusOK {
		t.Errorf("node1 (majority side) /readyz = %d during the partition", code)
	}
	if code := l.readyz("node3"); code == http.StatusOK {
		t.Errorf("node3 (cut off) /readyz = 200 at the end of the partition")
	}

	heal := time.Now()
	ld.setMark(heal)
	l.partition(true)
	healed = true
	l.measureConvergence(t, ld, heal, lateGot)

	ld.stopPub.Store(true)
	ld.pubWG.Wait()
	ld.settle(5 * time.Second)
	tl := ld.tally()
	l.figure(t, "acked", tl.acked)
	l.figure(t, "cross_node_lost_during_partition", tl.lostOutage)
	l.figure(t, "lost_after_heal", tl.lostAfter)
	l.figure(t, "duplicated", tl.duplicated)
	if tl.lostAfter != 0 {
		t.Errorf("%d messages lost after healing, e.g. %v", tl.lostAfter, tl.missing)
	}
	for _, n := range nodeNames {
		l.waitSettled(t, n, 15*time.Second)
	}
}

// measureConvergence measures, from heal, how long until node3 is ready again,
// node1 sees node3's new interest, retained messages from both sides are on both
// sides, and messages flow across in both directions.
func (l *lab) measureConvergence(t *testing.T, ld *load, heal time.Time, lateGot <-chan struct{}) {
	var wg sync.WaitGroup
	measure := func(name string, cond func() bool) {
		wg.Go(func() {
			took, ok := pollUntil(15*time.Second, cond)
			l.figure(t, name, took)
			if !ok {
				t.Errorf("%s: not after %v", name, took)
			} else if took > convergeTarget {
				t.Errorf("%s took %v, target %v", name, took, convergeTarget)
			}
		})
	}
	measure("node3_ready_after_heal_s", func() bool { return l.readyz("node3") == http.StatusOK })
	measure("interest_converged_s", func() bool { return l.peerAdvertises("node1", "node3", "lab/late/#") })
	measure("retained_converged_s", func() bool {
		want := []string{"lab/retained/side1", "lab/retained/side3"}
		return l.retainedOn(nodeIPs["node1"]+":1883", want) && l.retainedOn(nodeIPs["node3"]+":1883", want)
	})
	measure("cross_node_resumed_s", func() bool {
		_, ok := ld.restored()
		return ok
	})
	wg.Wait()
	// The interest node3 learned while alone now draws messages from node1.
	pub := l.startClient(nodeIPs["node1"]+":1883", "lab-part-latepub", 0, nil, nil)
	defer pub.stop()
	took, ok := pollUntil(convergeTarget, func() bool {
		_ = pub.publish("lab/late/x", []byte("x"), false, time.Second)
		select {
		case <-lateGot:
			return true
		case <-time.After(100 * time.Millisecond):
			return false
		}
	})
	if !ok {
		t.Errorf("node1→node3 delivery to the subscription made during the partition: none after %v", took)
	}
}

// delivered reports whether sub got a message from pub sent after since.
func (ld *load) delivered(sub, pub string, since time.Time) bool {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	for seq := range ld.got[sub][pub] {
		if ld.sent[pub][seq].After(since) {
			return true
		}
	}
	return false
}

// peerAdvertises reports whether at's /status shows peer advertising filter
// (or #), and at's data session holding what its peers need.
func (l *lab) peerAdvertises(at, peer, filter string) bool {
	s, err := l.status(at)
	if err != nil {
		return false
	}
	for _, p := range s.Peers {
		if p.Name == peer {
			return p.Up && s.Data.Current && (slices.Contains(p.Interest, filter) || slices.Contains(p.Interest, "#"))
		}
	}
	return false
}

// publishRetained publishes a retained QoS 1 message directly to a broker (an empty
// payload deletes it).
func (l *lab) publishRetained(t *testing.T, addr, topic, payload string) {
	t.Helper()
	pc, err := l.connectOnce(addr, &paho.Connect{ClientID: "lab-retainer", CleanStart: true, KeepAlive: 10}, nil, 2*time.Second)
	if err != nil {
		t.Errorf("retain %s: %v", topic, err)
		return
	}
	defer pc.Disconnect(&paho.Disconnect{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := pc.Publish(ctx, &paho.Publish{Topic: topic, Payload: []byte(payload), QoS: 1, Retain: true}); err != nil {
		t.Errorf("retain %s: %v", topic, err)
	}
}

// retainedOn reports whether a fresh subscriber on addr gets every topic in want as
// a retained message.
func (l *lab) retainedOn(addr string, want []string) bool {
	var mu sync.Mutex
	got := map[string]bool{}
	all := make(chan struct{})
	pc, err := l.connectOnce(addr, &paho.Connect{ClientID: "lab-retained-check", CleanStart: true, KeepAlive: 10}, func(m *paho.Publish) {
		mu.Lock()
		defer mu.Unlock()
		if m.Retain && len(m.Payload) > 0 {
			got[m.Topic] = true
		}
		if len(got) == len(want) {
			select {
			case <-all:
			default:
				close(all)
			}
		}
	}, time.Second)
	if err != nil {
		return false
	}
	defer pc.Disconnect(&paho.Disconnect{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := pc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "lab/retained/#", QoS: 1}}}); err != nil {
		return false
	}
	select {
	case <-all:
		return true
	case <-time.After(300 * time.Millisecond):
		return false
	}
}
