package forward

import (
	"sort"
	"time"

	"github.com/moha-project/moha/internal/message"
	"github.com/moha-project/moha/internal/topic"
)

// HistoryLimits bound the history of recent messages some peer did not get.
type HistoryLimits struct {
	// Window is how long a message stays replayable: longer than an
	// interest change takes to reach this agent from a peer's broker.
	Window time.Duration
	// Bytes caps the messages held (Message.Size); the oldest go first.
	Bytes int64
	// Margin is how much earlier than a peer's interest change a message
	// may have been accepted and still be replayed: the peer's delay in
	// reading its broker's log, plus the clocks' difference.
	Margin time.Duration
}

// histEntry is one message the local broker accepted that at least one
// peer did not get.
type histEntry struct {
	msg  *message.Message // as delivered: never changed after Enqueue
	at   int64            // when the forwarding loop took it (unix nanos)
	sent uint64           // bit i: sent to the router's peer i
	size int64
}

// history keeps recent messages that some peer did not get, so that a peer
// whose interest grows can be sent those it would have got had its new
// interest been known in time (docs/ARCHITECTURE.md, "The subscribe
// window"). It is owned by the forwarding loop.
type history struct {
	limits  HistoryLimits
	entries []histEntry // oldest first; entries[head:] are live
	head    int
	bytes   int64
	evicted uint64 // dropped for the byte cap before their window ended
}

// entryOverhead approximates what an entry costs beyond Message.Size: the
// entry, the message struct and the delivery holding it.
const entryOverhead = 256

func newHistory(l HistoryLimits) *history {
	return &history{limits: l}
}

// add records m, taken at `at`, as sent to the peers in sent.
func (h *history) add(m *message.Message, at int64, sent uint64) {
	if h.limits.Window <= 0 {
		return
	}
	h.expire(at)
	e := histEntry{msg: m, at: at, sent: sent, size: int64(m.Size()) + entryOverhead}
	h.entries = append(h.entries, e)
	h.bytes += e.size
	for h.bytes > h.limits.Bytes && h.head < len(h.entries) {
		h.evicted++
		h.pop()
	}
}

// expire drops the entries older than the window.
func (h *history) expire(now int64) {
	cutoff := now - int64(h.limits.Window)
	for h.head < len(h.entries) && h.entries[h.head].at < cutoff {
		h.pop()
	}
	if h.head > 1024 && h.head*2 > len(h.entries) {
		n := copy(h.entries, h.entries[h.head:])
		clear(h.entries[n:])
		h.entries, h.head = h.entries[:n], 0
	}
}

func (h *history) pop() {
	h.bytes -= h.entries[h.head].size
	h.entries[h.head] = histEntry{}
	h.head++
}

// unsentSince reports whether the history holds a message peer (bit) did
// not get, taken no earlier than since less the margin: whether replay for
// a change made at since may have anything to send.
func (h *history) unsentSince(bit uint64, since int64) bool {
	live := h.entries[h.head:]
	for i := h.firstFrom(since); i < len(live); i++ {
		if live[i].sent&bit == 0 {
			return true
		}
	}
	return false
}

// firstFrom is the index in the live entries of the first one taken no
// earlier than since less the margin. Entries are in the order taken (wall
// clock, as since is): those before are skipped at once (a change arrives
// milliseconds after it was made; the window is seconds).
func (h *history) firstFrom(since int64) int {
	from := since - int64(h.limits.Margin)
	live := h.entries[h.head:]
	return sort.Search(len(live), func(i int) bool { return live[i].at >= from })
}

// replay calls send, oldest first, for each held message that peer (bit)
// did not get, taken no earlier than since less the margin, whose topic one
// of filters matches; it marks them sent. A message whose expiry ran out
// while held is skipped, and one with expiry left is sent with what remains.
func (h *history) replay(bit uint64, filters *topic.Trie, since, now int64, send func(message.Message)) int {
	live := h.entries[h.head:]
	n := 0
	for i := h.firstFrom(since); i < len(live); i++ {
		e := &live[i]
		if e.sent&bit != 0 || !filters.Matches(e.msg.Topic) {
			continue
		}
		e.sent |= bit
		m, ok := withExpiryLeft(*e.msg, time.Duration(now-e.at))
		if !ok {
			continue
		}
		send(m)
		n++
	}
	return n
}

// withExpiryLeft returns m with its message expiry reduced by held, and
// false when nothing is left.
func withExpiryLeft(m message.Message, held time.Duration) (message.Message, bool) {
	if m.Props.MessageExpiry == nil {
		return m, true
	}
	spent := uint32(held / time.Second)
	if spent >= *m.Props.MessageExpiry {
		return m, false
	}
	left := *m.Props.MessageExpiry - spent
	m.Props.MessageExpiry = &left
	return m, true
}

// takeEvicted returns and resets the count of messages evicted early.
func (h *history) takeEvicted() uint64 {
	n := h.evicted
	h.evicted = 0
	return n
}

// len returns the number of messages held.
func (h *history) len() int { return len(h.entries) - h.head }
