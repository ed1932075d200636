// Package retained owns the agent's view of the retained messages its
// broker holds: the timestamp of each write (last writer wins across
// nodes), and the digest two nodes exchange to send each other only the
// retained messages one lacks (anti-entropy).
package retained

import (
	"hash/fnv"
	"sync"
	"time"

	"github.com/moha-project/moha/internal/message"
)

// DigestEntry describes one retained message a broker holds, as a DIGEST
// frame carries it.
type DigestEntry struct {
	Topic string
	Stamp int64  // the retained write's timestamp (unix nanos)
	Hash  uint64 // of payload and properties
}

// Store is the agent's view of the retained messages its broker
// holds, with the time each was written. It does two jobs:
//
// Convergence: every retained write (a deletion too) is stamped with the
// time its origin agent saw it, and a peer's retained write older than what
// the broker holds is not stored (last writer wins); it is still delivered
// to live subscribers, as a single broker delivers both of two racing writes.
// The broker, not the agent, decides which of a local write and a peer's
// write it stored last. Both reach the agent on the data session in the
// broker's order: the broker's PUBACK for the peer's write (republished) and
// its delivery of the local write. So while a peer's write is republished
// but not yet acknowledged, a local write the agent sees was stored before
// it, and is stamped older than it.
//
// Anti-entropy: when a link starts, each side sends a digest of what it
// holds and gets back only the retained messages it lacks or holds an older
// version of. The content is kept in memory for that: the agent's memory
// grows with the broker's retained store.
type Store struct {
	mu       sync.Mutex
	held     map[string]retainedEntry // topic -> what the broker holds (empty payload: a deletion)
	inFlight map[string]int64         // topic -> stamp of a peer's write republished, not yet acknowledged
	// suspect holds topics whose replay (the broker's retained message sent
	// on subscribe) differed from what the agent knows, with the stamp known
	// then: the next rescan tells a write the agent missed from a stale
	// replay (see suspectReplay).
	suspect map[string]int64
	pruned  time.Time
	// OnTopics is called when the set of topics holding a retained message
	// may have changed, possibly with the lock held: it must not block or
	// call back.
	OnTopics func()
}

// retainedEntry is what the agent knows of one topic's retained message.
// The topic is the map key and most messages carry no properties: the
// entry holds no copy of either, for it is kept per retained topic.
type retainedEntry struct {
	stamp   int64
	hash    uint64
	payload []byte // empty: a deletion
	props   *message.Properties
	qos     byte
}

// ScannedStamp marks retained messages found in the broker when the agent
// connected (restored from persistence or written while it was away): older
// than any write the agent saw happen.
const ScannedStamp = 1

// stampTTL is how long a deletion's stamp is kept to beat an older, delayed
// write. No delayed write is that old: a peer's buffer is dropped after
// interest_grace.
const stampTTL = time.Hour

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{held: map[string]retainedEntry{}, inFlight: map[string]int64{}, suspect: map[string]int64{}, pruned: time.Now(), OnTopics: func() {}}
}

// noteLocked records that m's topic now holds m (entry e), and calls
// OnTopics when the set of retained topics changed (a new one, or one
// deleted).
func (c *Store) noteLocked(m *message.Message, e retainedEntry) {
	old, had := c.held[m.Topic]
	c.held[m.Topic] = e
	if (!had || len(old.payload) == 0) != (len(m.Payload) == 0) {
		c.OnTopics()
	}
}

// Holds reports whether the broker holds exactly m as its retained message
// on m's topic, as far as the agent knows.
func (c *Store) Holds(m *message.Message) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.held[m.Topic]
	return ok && len(e.payload) > 0 && e.hash == contentHash(m)
}

// Topics returns the topics the broker holds a retained message on, as far
// as the agent knows.
func (c *Store) Topics() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.held))
	for t, e := range c.held {
		if len(e.payload) > 0 {
			out = append(out, t)
		}
	}
	return out
}

// Superseded reports whether the agent applied a newer retained write to
// m's topic than m (by stamp): republished late, m must not be stored.
func (c *Store) Superseded(m *message.Message) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return m.Written != 0 && c.held[m.Topic].stamp > m.Written
}

// Count returns how many topics the broker holds a retained message on,
// as far as the agent knows.
func (c *Store) Count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, e := range c.held {
		if len(e.payload) > 0 {
			n++
		}
	}
	return n
}

// StampFound records a retained message a rescan found that the agent did
// not see written: on a topic it knows no retained message on (no data
// subscription matched the write), or on a suspect topic whose value
// differs from what the agent knows while nothing it knows of happened
// since. It returns the write's stamp, or ok false.
func (c *Store) StampFound(m *message.Message, now time.Time) (stamp int64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, republishing := c.inFlight[m.Topic]; republishing {
		// A peer's write is on its way into the broker: what the scan
		// found may be the value it replaces, not a write of its own.
		delete(c.suspect, m.Topic)
		return 0, false
	}
	e, held := c.held[m.Topic]
	if held && len(e.payload) > 0 {
		since, suspect := c.suspect[m.Topic]
		delete(c.suspect, m.Topic)
		if !suspect || since != e.stamp || contentHash(m) == e.hash {
			return 0, false
		}
	}
	stamp = max(now.UnixNano(), e.stamp+1)
	c.noteLocked(m, newEntry(m, stamp))
	return stamp, true
}

// SuspectReplay records that the broker's replay of m's topic differs from
// what the agent knows. The replay alone cannot be trusted: Mosquitto sends
// retained messages on subscribe after acknowledging publishes it received
// later, so it may show a value older than a peer's write the agent
// republished. The next rescan decides (stampFound).
func (c *Store) SuspectReplay(m *message.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.suspect[m.Topic] = c.held[m.Topic].stamp
}

// StampLocal records a retained write published on the local broker and
// returns its stamp: strictly newer than anything applied for the topic.
func (c *Store) StampLocal(m *message.Message, now time.Time) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if remote, ok := c.inFlight[m.Topic]; ok {
		return remote - 1 // stored before the peer's write: it loses everywhere
	}
	stamp := max(now.UnixNano(), c.held[m.Topic].stamp+1)
	c.noteLocked(m, newEntry(m, stamp))
	return stamp
}

// Settled records that the broker acknowledged the republished peer write
// stamped `stamp` (for QoS 0: that it was written to the broker).
func (c *Store) Settled(topic string, stamp int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inFlight[topic] == stamp {
		delete(c.inFlight, topic)
	}
}

// ApplyRemote reports whether a peer's retained write is newer than what
// the local broker holds, and records it if so. Unstamped writes are
// applied: nothing to compare. dup reports the very write the broker holds
// already (several peers answered a digest): it must not be delivered again.
func (c *Store) ApplyRemote(m *message.Message, now time.Time) (apply, dup bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pruneLocked(now)
	if m.Written == 0 {
		return true, false
	}
	held := c.held[m.Topic]
	if m.Written < held.stamp {
		return false, false
	}
	e := newEntry(m, m.Written)
	if m.Written == held.stamp && e.hash == held.hash {
		return false, true
	}
	if m.Written == held.stamp && e.hash < held.hash {
		return false, false // a tie: the larger hash wins everywhere
	}
	c.noteLocked(m, e)
	c.inFlight[m.Topic] = m.Written
	return true, false
}

// LearnScanned records a retained message found in the broker by the scan
// at connect, unless the agent already knows a version of that topic.
func (c *Store) LearnScanned(m *message.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.held[m.Topic]; !ok {
		c.noteLocked(m, newEntry(m, ScannedStamp))
	}
}

// Digest lists what the broker holds, deletions included (they must beat
// older values elsewhere).
func (c *Store) Digest() []DigestEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]DigestEntry, 0, len(c.held))
	for t, e := range c.held {
		out = append(out, DigestEntry{Topic: t, Stamp: e.stamp, Hash: e.hash})
	}
	return out
}

// MissingAt returns the topics whose retained message a peer with this
// digest lacks or holds an older version of — and none it already has.
// Topics, not messages: at a million retained topics a copy of every
// message would double the store while the answer is sent; Current gives
// each message as it is sent.
func (c *Store) MissingAt(peer []DigestEntry) []string {
	has := make(map[string]DigestEntry, len(peer))
	for _, e := range peer {
		has[e.Topic] = e
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for t, e := range c.held {
		if p, ok := has[t]; !peerLacks(e, p, ok) {
			continue
		}
		out = append(out, t)
	}
	return out
}

// peerLacks reports whether a peer whose digest holds p (ok false: no
// entry for the topic) should be sent e.
func peerLacks(e retainedEntry, p DigestEntry, ok bool) bool {
	switch {
	case !ok && len(e.payload) == 0:
		return false // a deletion of something the peer never had
	case ok && (p.Stamp > e.stamp || p.Hash == e.hash):
		return false // the peer's is newer, or the same
	case ok && p.Stamp == e.stamp && p.Hash > e.hash:
		return false // same time, different content: the larger hash wins everywhere
	}
	return true
}

// Current returns topic's retained message as held now, with its retain
// flag and stamp set for a peer (an empty payload: a deletion), and false
// when the agent knows nothing of the topic any more.
func (c *Store) Current(topic string) (message.Message, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.held[topic]
	if !ok {
		return message.Message{}, false
	}
	return e.message(topic), true
}

// pruneLocked forgets deletions older than stampTTL, once a minute.
func (c *Store) pruneLocked(now time.Time) {
	if now.Sub(c.pruned) < time.Minute {
		return
	}
	c.pruned = now
	limit := now.Add(-stampTTL).UnixNano()
	for t, e := range c.held {
		if len(e.payload) == 0 && e.stamp < limit {
			delete(c.held, t)
		}
	}
}

func newEntry(m *message.Message, stamp int64) retainedEntry {
	e := retainedEntry{stamp: stamp, hash: contentHash(m), qos: m.QoS}
	e.payload = append([]byte(nil), m.Payload...) // the session may reuse its buffer
	if !m.Props.IsZero() {
		props := m.Props
		e.props = &props
	}
	return e
}

// message is e as a retained message on topic, stamped, for a peer.
func (e *retainedEntry) message(topic string) message.Message {
	m := message.Message{Topic: topic, Payload: e.payload, QoS: e.qos, Retain: true, Written: e.stamp}
	if e.props != nil {
		m.Props = *e.props
	}
	return m
}

// contentHash identifies a retained message's content: payload and the
// properties a peer's copy carries.
func contentHash(m *message.Message) uint64 {
	h := fnv.New64a()
	h.Write(m.Payload)
	h.Write([]byte{0})
	h.Write([]byte(m.Props.ContentType))
	h.Write([]byte{0})
	h.Write([]byte(m.Props.ResponseTopic))
	h.Write([]byte{0})
	h.Write(m.Props.CorrelationData)
	for _, u := range m.Props.User {
		h.Write([]byte{0})
		h.Write([]byte(u.Key))
		h.Write([]byte{0})
		h.Write([]byte(u.Value))
	}
	return h.Sum64()
}
