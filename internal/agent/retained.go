package agent

import (
	"sync"
	"time"
)

// retainedClock makes concurrent retained writes to one topic on different
// nodes converge: every retained message (a deletion too) is stamped with
// the time its origin agent saw it, each agent remembers the newest stamp it
// applied per topic, and a peer's retained message older than that is not
// stored (last writer wins). It is still delivered to live subscribers, as
// a single broker delivers both of two racing writes.
//
// The broker, not the agent, decides which of a local write and a peer's
// write it stored last. Both reach the agent on the data session in the
// broker's order: the broker's PUBACK for the peer's write (republished) and
// its delivery of the local write. So while a peer's write is republished
// but not yet acknowledged, a local write the agent sees was stored before
// it, and is stamped older than it.
type retainedClock struct {
	mu       sync.Mutex
	newest   map[string]int64 // topic -> stamp of the retained value the broker holds
	inFlight map[string]int64 // topic -> stamp of a peer's write republished, not yet acknowledged
	pruned   time.Time
}

// stampTTL is how long a topic's stamp is kept to beat an older, delayed
// write (a deletion's tombstone included). No delayed write is that old:
// a peer's buffer is dropped after interest_grace.
const stampTTL = time.Hour

func newRetainedClock() *retainedClock {
	return &retainedClock{newest: map[string]int64{}, inFlight: map[string]int64{}, pruned: time.Now()}
}

// stampLocal records a retained write published on the local broker and
// returns its stamp: strictly newer than anything applied for the topic.
func (c *retainedClock) stampLocal(topic string, now time.Time) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if remote, ok := c.inFlight[topic]; ok {
		return remote - 1 // stored before the peer's write: it loses everywhere
	}
	stamp := max(now.UnixNano(), c.newest[topic]+1)
	c.newest[topic] = stamp
	return stamp
}

// settled records that the broker acknowledged the republished peer write
// stamped `stamp` (for QoS 0: that it was written to the broker).
func (c *retainedClock) settled(topic string, stamp int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inFlight[topic] == stamp {
		delete(c.inFlight, topic)
	}
}

// applyRemote reports whether a peer's retained write stamped `stamp` is
// newer than what the local broker holds, and records it if so. Unstamped
// writes (stamp 0) are applied: nothing to compare.
func (c *retainedClock) applyRemote(topic string, stamp int64, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pruneLocked(now)
	if stamp == 0 {
		return true
	}
	if stamp <= c.newest[topic] {
		return false
	}
	c.newest[topic] = stamp
	c.inFlight[topic] = stamp
	return true
}

// pruneLocked forgets stamps older than stampTTL, once a minute, so the
// table does not grow with every retained topic ever written.
func (c *retainedClock) pruneLocked(now time.Time) {
	if now.Sub(c.pruned) < time.Minute {
		return
	}
	c.pruned = now
	limit := now.Add(-stampTTL).UnixNano()
	for t, s := range c.newest {
		if s < limit {
			delete(c.newest, t)
		}
	}
}
