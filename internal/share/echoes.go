package share

import (
	"hash/maphash"
	"sync"
	"time"

	"github.com/moha-project/moha/internal/message"
)

// Echoes remembers the messages the agent republished into its broker
// where its own share memberships could take them back (Mosquitto forbids
// No Local on a shared subscription). A message a membership takes that is
// found here is an echo: it came from a peer, or was kept, and must reach a
// member here rather than travel again. Messages are known by topic and
// payload; a client publishing the same pair at the same moment may be
// taken for the echo, which changes only which node delivers it.
//
// The table is bounded: entries expire after ttl and the oldest go first
// beyond limit. A forgotten echo is treated as a local client's message:
// forwarded once more, never lost. It is safe for concurrent use.
type Echoes struct {
	mu      sync.Mutex
	seed    maphash.Seed
	ttl     time.Duration
	limit   int
	entries map[uint64][]pending // key -> its pending echoes, oldest first
	order   []noted              // FIFO of every Note, for expiry
	head    int                  // order[head:] is live
	seq     uint64               // Notes so far
}

type pending struct {
	seq      uint64
	attempts int
}

type noted struct {
	key uint64
	seq uint64
	at  time.Time
}

// NewEchoes returns a table keeping an entry ttl long, at most limit of them.
func NewEchoes(ttl time.Duration, limit int) *Echoes {
	return &Echoes{seed: maphash.MakeSeed(), ttl: ttl, limit: max(limit, 1), entries: map[uint64][]pending{}}
}

func (e *Echoes) key(m *message.Message) uint64 {
	var h maphash.Hash
	h.SetSeed(e.seed)
	h.WriteString(m.Topic)
	h.WriteByte(0)
	h.Write(m.Payload)
	return h.Sum64()
}

// Note records that m is being republished for the attempts-th time (0 for
// a peer's message, more for an echo published again).
func (e *Echoes) Note(m *message.Message, attempts int, now time.Time) {
	k := e.key(m)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.expireLocked(now)
	for len(e.order)-e.head >= e.limit {
		e.dropOldestLocked()
	}
	e.seq++
	e.entries[k] = append(e.entries[k], pending{seq: e.seq, attempts: attempts})
	e.order = append(e.order, noted{key: k, seq: e.seq, at: now})
}

// Take reports whether m is a noted republish, consuming the entry, and how
// many times it was republished.
func (e *Echoes) Take(m *message.Message, now time.Time) (attempts int, echo bool) {
	k := e.key(m)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.expireLocked(now)
	p := e.entries[k]
	if len(p) == 0 {
		return 0, false
	}
	e.removeFirstLocked(k, p)
	// Its FIFO record stays and finds nothing when it expires.
	return p[0].attempts, true
}

// Len returns how many echoes are pending.
func (e *Echoes) Len() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, p := range e.entries {
		n += len(p)
	}
	return n
}

func (e *Echoes) removeFirstLocked(k uint64, p []pending) {
	if len(p) == 1 {
		delete(e.entries, k)
	} else {
		e.entries[k] = p[1:]
	}
}

func (e *Echoes) expireLocked(now time.Time) {
	for e.head < len(e.order) && now.Sub(e.order[e.head].at) > e.ttl {
		e.dropOldestLocked()
	}
}

// dropOldestLocked forgets the oldest Note, unless Take consumed it.
func (e *Echoes) dropOldestLocked() {
	old := e.order[e.head]
	e.order[e.head] = noted{}
	e.head++
	if p := e.entries[old.key]; len(p) > 0 && p[0].seq == old.seq {
		e.removeFirstLocked(old.key, p)
	}
	if e.head > len(e.order)/2 && e.head > 1024 {
		e.order = append(e.order[:0:0], e.order[e.head:]...)
		e.head = 0
	}
}
