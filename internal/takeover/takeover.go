// Package takeover keeps a client id connected on one node at most, as one
// broker would (docs/ARCHITECTURE.md, "Client id takeover across nodes"):
// the bookkeeping of which clients are connected here and since when, which
// announcements of other nodes close a connection or end a session here,
// and which announcements a peer whose link comes back may have missed. The
// agent makes the connections that carry the decisions out.
package takeover

import (
	"slices"
	"sync"
	"time"

	"github.com/moha-project/moha/internal/interest"
	"github.com/moha-project/moha/internal/mesh"
)

// noteMemory is how long a Tracker remembers the CLIENT announcements it
// made, to send them again to a peer whose link comes back (a node cut off
// meanwhile must learn of a clean start or a move it missed); maxNotes
// bounds how many it remembers.
const (
	noteMemory = 10 * time.Minute
	maxNotes   = 100000
)

// Tracker is one agent's bookkeeping: each agent announces the clients that
// connect to its broker (with the time), and an agent holding an older
// connection with the same id closes it by taking the id over itself
// (Mosquitto 2.0.11 has no other way to close a client's connection) and
// disconnecting at once. Safe for concurrent use.
type Tracker struct {
	mu    sync.Mutex
	local map[string]int64 // client id -> when its current local connection started (unix nanos)
	// kicking holds the ids this agent is taking over: their next connect
	// lines are its own, one per entry, in order; an entry is true for a
	// takeover with clean start (its session ends with its connection).
	kicking map[string][]bool
	// seen: when each client id last connected here (unix nanos), for
	// noteMemory: an announcement older than that connection is stale.
	seen map[string]int64
	// recent[head:]: the announcements made, oldest first, for noteMemory.
	recent []mesh.ClientNote
	head   int
}

// New returns an empty tracker.
func New() *Tracker {
	return &Tracker{local: map[string]int64{}, kicking: map[string][]bool{}, seen: map[string]int64{}}
}

// remember records an announcement made at now, and forgets what is
// older than noteMemory (or beyond maxNotes). Called with t.mu held. The
// forgotten head is cut off only once it is half the slice: a connect
// costs O(1) amortized, also in a reconnect storm.
func (t *Tracker) remember(n mesh.ClientNote, now time.Time) {
	t.seen[n.ID] = n.At
	t.recent = append(t.recent, n)
	cut := now.Add(-noteMemory).UnixNano()
	for t.head < len(t.recent) && (t.recent[t.head].At < cut || len(t.recent)-t.head > maxNotes) {
		if old := t.recent[t.head]; t.seen[old.ID] == old.At {
			delete(t.seen, old.ID)
		}
		t.head++
	}
	if t.head > len(t.recent)/2 {
		t.recent = append(t.recent[:0], t.recent[t.head:]...)
		t.head = 0
	}
}

// RecentNotes returns the announcements of the last noteMemory, oldest
// first: what a peer whose link comes back may have missed.
func (t *Tracker) RecentNotes() []mesh.ClientNote {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.recent[t.head:])
}

// NewerThanHere reports whether announcement n is newer than the last
// connection of its client here (none within noteMemory counts as older).
func (t *Tracker) NewerThanHere(n mesh.ClientNote) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.newerLocked(n)
}

func (t *Tracker) newerLocked(n mesh.ClientNote) bool {
	at, ok := t.seen[n.ID]
	return !ok || at < n.At
}

// OnEvent follows local connects and disconnects, read at now. It reports
// the announcement to make, if any (a real client connected here), and marks
// the connect line of the agent's own clean takeover connection: its
// session ends with it (session expiry 0), whatever the log can show.
func (t *Tracker) OnEvent(ev *interest.Event, now time.Time) (mesh.ClientNote, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch ev.Kind {
	case interest.Connected:
		if pending := t.kicking[ev.ClientID]; len(pending) > 0 {
			ev.EndsWithConnection = pending[0] // the agent's own takeover connection
			t.popKick(ev.ClientID)
			return mesh.ClientNote{}, false
		}
		at := stamp(ev, now)
		t.local[ev.ClientID] = at
		note := mesh.ClientNote{ID: ev.ClientID, Clean: ev.Clean, At: at}
		t.remember(note, now)
		return note, true
	case interest.Disconnected, interest.Expired:
		delete(t.local, ev.ClientID)
	}
	return mesh.ClientNote{}, false
}

// stamp is when a connection started, as closely as the agent can tell:
// when it read the connect line (now), but no later than the end of the
// second the broker logged the line in (ev.Time, when the line had one). An
// agent reading its broker's log seconds late (a burst of log lines) would
// otherwise stamp an older connection as newer than another node's, and
// that node would close the client's newer connection instead of this one.
func stamp(ev *interest.Event, now time.Time) int64 {
	at := now.UnixNano()
	if ev.Time > 0 {
		at = min(at, (ev.Time+1)*int64(time.Second)-1)
	}
	return at
}

// popKick drops the oldest pending takeover of id. Called with t.mu held.
func (t *Tracker) popKick(id string) {
	if pending := t.kicking[id]; len(pending) > 1 {
		t.kicking[id] = pending[1:]
	} else {
		delete(t.kicking, id)
	}
}

// ShouldKick decides on a peer's announcement: the local connection goes if
// it is older (on a tie, the node whose name sorts higher yields).
func (t *Tracker) ShouldKick(n mesh.ClientNote, self, peer string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	at, ok := t.local[n.ID]
	if !ok || at > n.At || (at == n.At && self < peer) {
		return false
	}
	delete(t.local, n.ID)
	t.kicking[n.ID] = append(t.kicking[n.ID], n.Clean)
	return true
}

// ShouldEnd decides on a peer's announcement for a client not connected
// here: a clean start elsewhere ends the session this node still holds for
// it (offline says the broker has one), as a single broker discards a
// session when its client connects with clean start.
func (t *Tracker) ShouldEnd(n mesh.ClientNote, offline bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !n.Clean || !offline || !t.newerLocked(n) {
		return false // an announcement sent again may predate the session here
	}
	if _, connected := t.local[n.ID]; connected {
		return false // ShouldKick decides
	}
	t.kicking[n.ID] = append(t.kicking[n.ID], true)
	return true
}

// KickPending reports whether the agent is taking id over: its next connect
// line is the takeover's.
func (t *Tracker) KickPending(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.kicking[id]) > 0
}

// ConnectedHere reports whether a client is connected here with id.
func (t *Tracker) ConnectedHere(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.local[id]
	return ok
}

// KickFailed undoes ShouldKick's bookkeeping when no connection was made.
func (t *Tracker) KickFailed(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.kicking[id]) > 0 {
		t.popKick(id)
	}
}
