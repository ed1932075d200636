// Package forward owns the forwarding decision and the delivery bookkeeping
// of the agent's data path: which peers a message published on the local
// broker must go to (each peer's advertised interest, kept in a topic trie),
// and when that message may be acknowledged to the local broker (once every
// target peer has accepted or buffered it).
package forward

import (
	"slices"
	"sync"

	"github.com/moha-project/moha/internal/topic"
)

// Router holds every peer's advertised interest. It is safe for concurrent
// use: link goroutines update it, the forwarding loop reads it.
type Router struct {
	mu    sync.RWMutex
	order []string               // peer names, sorted: targets come out in a stable order
	tries map[string]*topic.Trie // peer -> its advertised filters (a set: counts are always 1)
}

// NewRouter returns a router for the given peers. Until a peer's first
// snapshot arrives its interest is unknown, so it starts as "#": the agent
// over-states rather than lose a message [DESIGN.md §2].
func NewRouter(peers []string) *Router {
	r := &Router{tries: make(map[string]*topic.Trie, len(peers))}
	for _, p := range peers {
		t := topic.NewTrie()
		_, _ = t.Add("#")
		r.tries[p] = t
		r.order = append(r.order, p)
	}
	slices.Sort(r.order)
	return r
}

// Apply records a change of peer's interest. With replace, filters added is
// the complete new set. It returns the filters that were refused as invalid
// (a misbehaving peer), for the caller to log.
func (r *Router) Apply(peer string, replace bool, added, removed []string) (invalid []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.tries[peer]
	if !ok {
		return nil
	}
	if replace {
		t = topic.NewTrie()
		r.tries[peer] = t
	}
	for _, f := range removed {
		t.Remove(f)
	}
	for _, f := range added {
		if t.Count(f) > 0 {
			continue // a set, not a multiset: the peer already de-duplicated
		}
		if _, err := t.Add(f); err != nil {
			invalid = append(invalid, f)
		}
	}
	return invalid
}

// Targets appends to dst the peers that must receive a message on topic:
// every peer for a retained message (retained state must exist on every
// node), otherwise the peers whose interest matches.
func (r *Router) Targets(topicName string, retain bool, dst []string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, p := range r.order {
		if retain || r.tries[p].Matches(topicName) {
			dst = append(dst, p)
		}
	}
	return dst
}

// Peers returns the peer names in stable order.
func (r *Router) Peers() []string { return append([]string(nil), r.order...) }

// Filters returns how many distinct filters peer advertises.
func (r *Router) Filters(peer string) int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if t, ok := r.tries[peer]; ok {
		return t.Len()
	}
	return 0
}

// FilterList returns peer's advertised filters (for /status).
func (r *Router) FilterList(peer string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if t, ok := r.tries[peer]; ok {
		return t.Filters()
	}
	return nil
}
