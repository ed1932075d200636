package lab

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// load is steady QoS 1 traffic: publishers number their messages, subscribers record
// what they get, so every (publisher, subscriber) flow can be checked for gaps and
// duplicates.
type load struct {
	l      *lab
	prefix string
	every  time.Duration // between one publisher's messages

	mu    sync.Mutex
	sent  map[string]map[int]time.Time         // publisher → seq → first attempt
	acked map[string]map[int]bool              // publisher → seq → PUBACK seen
	got   map[string]map[string]map[int]int    // subscriber → publisher → seq → copies
	mark  time.Time                            // the event; zero before it
	from  time.Time                            // messages sent before this are not counted
	first map[string]map[string]firstDelivered // subscriber → publisher → first message sent after mark

	pubs, subs []*client
	pubIDs     []string
	subIDs     []string
	stopPub    atomic.Bool
	pubWG      sync.WaitGroup
}

type firstDelivered struct {
	seq int
	at  time.Time
}

func (l *lab) newLoad(prefix string, every time.Duration) *load {
	return &load{l: l, prefix: prefix, every: every, sent: map[string]map[int]time.Time{},
		acked: map[string]map[int]bool{}, got: map[string]map[string]map[int]int{},
		first: map[string]map[string]firstDelivered{}}
}

func (ld *load) topicPrefix() string { return "lab/" + ld.prefix + "/" }

// addSubscriber connects a subscriber to addr (clean session unless expiry > 0).
func (ld *load) addSubscriber(addr, id string, expiry uint32) {
	ld.mu.Lock()
	ld.got[id] = map[string]map[int]int{}
	ld.first[id] = map[string]firstDelivered{}
	ld.subIDs = append(ld.subIDs, id)
	ld.mu.Unlock()
	c := ld.l.startClient(addr, id, expiry, []string{ld.topicPrefix() + "#"}, func(m *paho.Publish) { ld.received(id, m) })
	ld.subs = append(ld.subs, c)
}

func (ld *load) received(sub string, m *paho.Publish) {
	pub, seqText, ok := strings.Cut(string(m.Payload), ":")
	seq, err := strconv.Atoi(seqText)
	if !ok || err != nil {
		return
	}
	now := time.Now()
	ld.mu.Lock()
	defer ld.mu.Unlock()
	if ld.got[sub][pub] == nil {
		ld.got[sub][pub] = map[int]int{}
	}
	ld.got[sub][pub][seq]++
	if ld.mark.IsZero() {
		return
	}
	if _, seen := ld.first[sub][pub]; !seen && !ld.sent[pub][seq].Before(ld.mark) {
		ld.first[sub][pub] = firstDelivered{seq, now}
	}
}

// addPublisher connects a publisher to addr and starts its loop: one message every
// ld.every, a failed one retried (same number) until it is acknowledged. It first waits
// (up to 5 s) until every subscriber added so far holds its subscription: a message
// published before that reaches no one on one broker either, and is not a loss.
func (ld *load) addPublisher(addr, id string) {
	for _, s := range ld.subs {
		_, _ = s.current(5 * time.Second)
	}
	ld.mu.Lock()
	ld.sent[id], ld.acked[id] = map[int]time.Time{}, map[int]bool{}
	ld.pubIDs = append(ld.pubIDs, id)
	ld.mu.Unlock()
	c := ld.l.startClient(addr, id, 0, nil, nil)
	ld.pubs = append(ld.pubs, c)
	ld.pubWG.Go(func() {
		for seq := 1; !ld.stopPub.Load(); seq++ {
			ld.mu.Lock()
			ld.sent[id][seq] = time.Now()
			ld.mu.Unlock()
			for !ld.stopPub.Load() {
				if err := c.publish(ld.topicPrefix()+id, fmt.Appendf(nil, "%s:%d", id, seq), false, time.Second); err == nil {
					ld.mu.Lock()
					ld.acked[id][seq] = true
					ld.mu.Unlock()
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(ld.every)
		}
	})
}

// stop ends the publishers, then every client.
func (ld *load) stop() {
	ld.stopPub.Store(true)
	ld.pubWG.Wait()
	for _, c := range append(ld.pubs, ld.subs...) {
		c.stop()
	}
}

// flowing reports whether every subscriber has a message from every publisher sent
// after since.
func (ld *load) flowing(since time.Time) bool {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	for _, sub := range ld.subIDs {
		for _, pub := range ld.pubIDs {
			ok := false
			for seq := range ld.got[sub][pub] {
				if ld.sent[pub][seq].After(since) {
					ok = true
					break
				}
			}
			if !ok {
				return false
			}
		}
	}
	return true
}

// countFrom makes the tally ignore messages sent before at (before every
// subscription was in place).
func (ld *load) countFrom(at time.Time) {
	ld.mu.Lock()
	ld.from = at
	ld.mu.Unlock()
}

// setMark records the event time; flows restart counting from it.
func (ld *load) setMark(at time.Time) {
	ld.mu.Lock()
	ld.mark = at
	ld.mu.Unlock()
}

// restored returns when the last flow delivered its first message sent after the
// mark, or false if some flow has not yet.
func (ld *load) restored() (time.Duration, bool) {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	var worst time.Duration
	for _, sub := range ld.subIDs {
		for _, pub := range ld.pubIDs {
			f, ok := ld.first[sub][pub]
			if !ok {
				return 0, false
			}
			worst = max(worst, f.at.Sub(ld.mark))
		}
	}
	return worst, true
}

// tally is what the flows lost and duplicated: acknowledged messages a subscriber
// never got, before its flow was restored (during the outage) and after it.
type tally struct {
	lostOutage, lostAfter, duplicated, acked int
	expected                                 int      // acked messages × subscribers
	missing                                  []string // a few lost-after examples
	missingOutage                            []string // a few lost-during-the-outage examples, with when they were sent
}

func (ld *load) tally() tally {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	var t tally
	for _, pub := range ld.pubIDs {
		t.acked += len(ld.acked[pub])
	}
	for _, sub := range ld.subIDs {
		for _, pub := range ld.pubIDs {
			restoredAt := ld.first[sub][pub].seq
			for seq := range ld.acked[pub] {
				if ld.sent[pub][seq].Before(ld.from) {
					continue
				}
				t.expected++
				switch n := ld.got[sub][pub][seq]; {
				case n == 0 && seq <= restoredAt:
					t.lostOutage++
					if len(t.missingOutage) < 5 {
						t.missingOutage = append(t.missingOutage, fmt.Sprintf("%s←%s:%d sent %s", sub, pub, seq, ld.sent[pub][seq].Format("15:04:05.000")))
					}
				case n == 0:
					t.lostAfter++
					if len(t.missing) < 5 {
						t.missing = append(t.missing, fmt.Sprintf("%s←%s:%d", sub, pub, seq))
					}
				}
			}
			for _, n := range ld.got[sub][pub] {
				t.duplicated += max(0, n-1)
			}
		}
	}
	return t
}

// lostOutageOf counts the messages lost before their flow was restored by the
// subscribers in subs.
func (ld *load) lostOutageOf(subs map[string]bool) int {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	n := 0
	for sub := range subs {
		for _, pub := range ld.pubIDs {
			for seq := range ld.acked[pub] {
				if ld.got[sub][pub][seq] == 0 && seq <= ld.first[sub][pub].seq {
					n++
				}
			}
		}
	}
	return n
}

// lostOutageWhere counts the messages lost before their flow was restored in the
// flows keep selects, and returns when the oldest of them was sent.
func (ld *load) lostOutageWhere(keep func(sub, pub string) bool) (n int, oldest time.Time) {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	for _, sub := range ld.subIDs {
		for _, pub := range ld.pubIDs {
			if !keep(sub, pub) {
				continue
			}
			for seq := range ld.acked[pub] {
				sent := ld.sent[pub][seq]
				if sent.Before(ld.from) || ld.got[sub][pub][seq] != 0 || seq > ld.first[sub][pub].seq {
					continue
				}
				n++
				if oldest.IsZero() || sent.Before(oldest) {
					oldest = sent
				}
			}
		}
	}
	return n, oldest
}

// settle waits until every subscriber has every acknowledged message (or timeout):
// a message that is late is not counted lost.
func (ld *load) settle(timeout time.Duration) {
	_, _ = pollUntil(timeout, func() bool { t := ld.tally(); return t.lostAfter == 0 && t.lostOutage == 0 })
}

// placements returns how many of ids are connected to node.
func (l *lab) countOn(node string, ids []string) int {
	n := 0
	for _, id := range ids {
		if at, ok := l.place.of(id); ok && at.Node == node {
			n++
		}
	}
	return n
}

// waitPlaced waits until the brokers' logs have placed every id.
func (l *lab) waitPlaced(t *testing.T, ids []string) {
	t.Helper()
	waitFor(t, 10*time.Second, "every client placed on a node", func() bool {
		for _, id := range ids {
			if _, ok := l.place.of(id); !ok {
				return false
			}
		}
		return true
	})
}

// placementFigure describes where ids are connected, e.g. "node1:2 node2:1 node3:3".
func (l *lab) placementFigure(ids []string) string {
	var parts []string
	for _, n := range nodeNames {
		parts = append(parts, fmt.Sprintf("%s:%d", n, l.countOn(n, ids)))
	}
	return strings.Join(parts, " ")
}
