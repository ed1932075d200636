package agent

import (
	"context"
	"sync"
	"time"

	"github.com/moha-project/moha/internal/cluster"
	"github.com/moha-project/moha/internal/interest"
	"github.com/moha-project/moha/internal/session"
)

// keptSessionExpiry is how long a persistent session outlives a takeover
// from another node (the client's own expiry is not visible to the agent).
const keptSessionExpiry = 24 * 60 * 60

// takeovers keeps a client id connected on one node at most, as a single
// broker would: each agent announces the clients that connect to its broker
// (with the time), and an agent holding an older connection with the same id
// closes it by taking the id over itself (Mosquitto 2.0.11 has no other way
// to close a client's connection) and disconnecting at once.
type takeovers struct {
	mu    sync.Mutex
	local map[string]int64 // client id -> when its current local connection started (unix nanos)
	// kicking holds the ids this agent is taking over: their next connect
	// lines are its own, one per entry, in order; an entry is true for a
	// takeover with clean start (its session ends with its connection).
	kicking map[string][]bool
}

func newTakeovers() *takeovers {
	return &takeovers{local: map[string]int64{}, kicking: map[string][]bool{}}
}

// onEvent follows local connects and disconnects. It reports the
// announcement to make, if any (a real client connected here), and marks
// the connect line of the agent's own clean takeover connection: its
// session ends with it (session expiry 0), whatever the log can show.
func (t *takeovers) onEvent(ev *interest.Event, now time.Time) (cluster.ClientNote, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch ev.Kind {
	case interest.Connected:
		if pending := t.kicking[ev.ClientID]; len(pending) > 0 {
			ev.EndsWithConnection = pending[0] // the agent's own takeover connection
			t.popKick(ev.ClientID)
			return cluster.ClientNote{}, false
		}
		t.local[ev.ClientID] = now.UnixNano()
		return cluster.ClientNote{ID: ev.ClientID, Clean: ev.Clean, At: now.UnixNano()}, true
	case interest.Disconnected, interest.Expired:
		delete(t.local, ev.ClientID)
	}
	return cluster.ClientNote{}, false
}

// popKick drops the oldest pending takeover of id. Called with t.mu held.
func (t *takeovers) popKick(id string) {
	if pending := t.kicking[id]; len(pending) > 1 {
		t.kicking[id] = pending[1:]
	} else {
		delete(t.kicking, id)
	}
}

// shouldKick decides on a peer's announcement: the local connection goes if
// it is older (on a tie, the node whose name sorts higher yields).
func (t *takeovers) shouldKick(n cluster.ClientNote, self, peer string) bool {
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

// shouldEnd decides on a peer's announcement for a client not connected
// here: a clean start elsewhere ends the session this node still holds for
// it (offline says the broker has one), as a single broker discards a
// session when its client connects with clean start.
func (t *takeovers) shouldEnd(n cluster.ClientNote, offline bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !n.Clean || !offline {
		return false
	}
	if _, connected := t.local[n.ID]; connected {
		return false // shouldKick decides
	}
	t.kicking[n.ID] = append(t.kicking[n.ID], true)
	return true
}

// kickPending reports whether the agent is taking id over: its next connect
// line is the takeover's.
func (t *takeovers) kickPending(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.kicking[id]) > 0
}

// connectedHere reports whether a client is connected here with id.
func (t *takeovers) connectedHere(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.local[id]
	return ok
}

// kickFailed undoes shouldKick's bookkeeping when no connection was made.
func (t *takeovers) kickFailed(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.kicking[id]) > 0 {
		t.popKick(id)
	}
}

// peerClient is the mesh's callback for a CLIENT announcement. It must not
// block: the takeover runs on its own goroutine, owned by the agent's
// WaitGroup through kickWG.
func (a *Agent) peerClient(peer string, n cluster.ClientNote) {
	var kick bool
	switch {
	case a.takeovers.shouldKick(n, a.node.Name, peer):
		a.metrics.takeovers.Inc()
		kick = true
	case a.takeovers.shouldEnd(n, a.table.Offline(n.ID)):
		a.metrics.endedSessions.Inc()
		kick = true
	}
	// Unless the client's connection here is the newer one (the peer's goes),
	// its session now lives at peer.
	a.replicas.peerClient(peer, n, !a.takeovers.connectedHere(n.ID))
	if kick {
		a.kickWG.Go(func() { a.kick(peer, n) })
	}
}

// kick closes the local connection of n.ID by connecting with the same id
// (or, for an offline session and a clean start elsewhere, ends the session).
// The takeover connection mirrors the newer connection's clean start, so
// the old connection's will fares as on a single broker. A clean newer
// connection ends the session here too (session expiry 0). A persistent one
// leaves it in place for keptSessionExpiry: the client's queued messages
// wait here for its return (HAProxy's consistent hashing brings it back to
// this node once it is up), at the price of duplicates it may then get.
func (a *Agent) kick(peer string, n cluster.ClientNote) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cfg := a.sessionConfig(n.ID)
	cfg.CleanStart = n.Clean
	cfg.SessionExpiry = 0
	if !n.Clean {
		cfg.SessionExpiry = keptSessionExpiry
	}
	s, err := session.Dial(ctx, cfg, nil)
	if err != nil {
		a.takeovers.kickFailed(n.ID)
		a.log.Warn("could not close a client connected on another node too", "client", n.ID, "peer", peer, "err", err)
		return
	}
	_ = s.Close()
	a.log.Info("closed a client's older connection or session: it connected again on another node", "client", n.ID, "peer", peer, "clean_start", n.Clean)
}
