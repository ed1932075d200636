package replica

import (
	"maps"
	"slices"
	"time"

	"github.com/moha-project/moha/internal/mesh"
)

// Action is what the agent must do with one replica on its broker.
type Action struct {
	ID     string
	Holder string           // the node holding the session (Start, Update)
	Note   mesh.SessionNote // the session as the holder last told (Start, Update)
	Kind   ActionKind
}

// ActionKind says what an Action does.
type ActionKind int

const (
	// Start: keep a replica of the session (connect with its id, subscribe
	// its filters).
	Start ActionKind = iota + 1
	// Update: the session changed (filters, online) or moved to another holder.
	Update
	// End: the replica ends; its session on the broker is discarded.
	End
)

// Keeper is the replica node's bookkeeping: the replicas it keeps and for
// which holder. Not safe for concurrent use (one owner).
type Keeper struct {
	grace    time.Duration
	replicas map[string]*kept
}

type kept struct {
	holder string
	note   mesh.SessionNote
	since  time.Time // when the holder last told of it
	// movedAt: the client connected at another node than the holder; the
	// replica ends unless that node claims it within the grace period.
	movedAt time.Time
	movedTo string
}

// NewKeeper returns an empty keeper. A replica whose client connects at a
// node other than its holder ends unless that node asks for it within
// grace.
func NewKeeper(grace time.Duration) *Keeper {
	return &Keeper{grace: grace, replicas: map[string]*kept{}}
}

// Apply applies peer's SESSIONS, received at now. A session the peer holds
// replaces what another holder said of it (the client moved: the latest
// holder wins).
func (k *Keeper) Apply(peer string, ch mesh.SessionChange, now time.Time) []Action {
	var out []Action
	named := map[string]bool{}
	for _, n := range ch.Notes {
		named[n.ID] = true
		r := k.replicas[n.ID]
		switch {
		case n.Drop:
			if r != nil && r.holder == peer {
				out = append(out, k.end(n.ID))
			}
		case r == nil:
			k.replicas[n.ID] = &kept{holder: peer, note: n, since: now}
			out = append(out, Action{ID: n.ID, Holder: peer, Note: n, Kind: Start})
		default:
			r.holder, r.note, r.since, r.movedAt, r.movedTo = peer, n, now, time.Time{}, ""
			out = append(out, Action{ID: n.ID, Holder: peer, Note: n, Kind: Update})
		}
	}
	if ch.Replace {
		for _, id := range slices.Sorted(maps.Keys(k.replicas)) {
			if k.replicas[id].holder == peer && !named[id] {
				out = append(out, k.end(id))
			}
		}
	}
	return out
}

// ClientAt records a client that connected at node peer at time at (its
// CLIENT announcement). A clean start ends the replica, as one broker
// discards the session; a connection at another node than the holder starts
// the grace period (Expire). An announcement older than what the holder
// last said of the session (one sent again when a link came back) changes
// nothing.
func (k *Keeper) ClientAt(peer string, id string, clean bool, at, now time.Time) []Action {
	r := k.replicas[id]
	switch {
	case r == nil, at.Before(r.since):
		return nil
	case clean:
		return []Action{k.end(id)}
	case peer != r.holder:
		r.movedAt, r.movedTo = now, peer
	}
	return nil
}

// Expire ends the replicas whose client moved to a node that did not ask
// for them within the grace period.
func (k *Keeper) Expire(now time.Time) []Action {
	var out []Action
	for _, id := range slices.Sorted(maps.Keys(k.replicas)) {
		r := k.replicas[id]
		if !r.movedAt.IsZero() && now.Sub(r.movedAt) >= k.grace {
			out = append(out, k.end(id))
		}
	}
	return out
}

// Promote records that the client itself connected here: the replica is
// its session now, held here. It reports whether id was a replica.
func (k *Keeper) Promote(id string) bool {
	_, ok := k.replicas[id]
	delete(k.replicas, id)
	return ok
}

// Holds reports whether id is a replica kept here.
func (k *Keeper) Holds(id string) bool {
	_, ok := k.replicas[id]
	return ok
}

// Holder returns the node holding id's session ("" if no replica is kept).
func (k *Keeper) Holder(id string) string {
	if r := k.replicas[id]; r != nil {
		return r.holder
	}
	return ""
}

// Len returns how many replicas are kept.
func (k *Keeper) Len() int { return len(k.replicas) }

// ByHolder returns the ids of the replicas kept for holder, sorted.
func (k *Keeper) ByHolder(holder string) []string {
	var out []string
	for id, r := range k.replicas {
		if r.holder == holder {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

func (k *Keeper) end(id string) Action {
	delete(k.replicas, id)
	return Action{ID: id, Kind: End}
}
