// Package forward owns the forwarding decision and the delivery bookkeeping
// of the agent's data path: which peers a message published on the local
// broker must go to (each peer's advertised interest, kept in a topic trie),
// and when that message may be acknowledged to the local broker (once every
// target peer has accepted or buffered it).
package forward

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/moha-project/moha/internal/topic"
)

// Router holds every peer's advertised interest. It is safe for concurrent
// use: link goroutines update it, the forwarding loop reads it.
type Router struct {
	mu    sync.RWMutex
	order []string               // peer names, sorted: targets come out in a stable order
	tries map[string]*topic.Trie // peer -> its advertised filters (a set: counts are always 1)

	// Shared subscriptions ($share/<group>/<filter>) are routed apart: a
	// group gets each message once across the cluster.
	shared      map[string]map[string]*topic.Trie // peer -> group -> filters
	localShared map[string]*topic.Trie            // group -> this node's filters
	sharedCount int                               // shared filters known anywhere: 0 skips the work
	down        map[string]bool                   // peers whose link is down
	turn        atomic.Uint64                     // round-robin among a group's member nodes
	// union counts, per filter, the peers (and peers' shared groups) that
	// want it: EachWanted's answer, kept up to date as interest changes.
	// Only kept with keepWanted: a data session that subscribes "#" never
	// asks, and at a million filters the union is a fifth of the agent.
	union      map[string]int
	keepWanted bool
}

// NewRouter returns a router for the given peers. Until a peer's first
// snapshot arrives its interest is unknown, so it starts as "#": the agent
// over-states rather than lose a message (docs/ARCHITECTURE.md, Interest).
// keepWanted keeps the union of the peers' filters that EachWanted walks
// (a data session that follows interest needs it).
func NewRouter(peers []string, keepWanted bool) *Router {
	r := &Router{
		tries:       make(map[string]*topic.Trie, len(peers)),
		shared:      make(map[string]map[string]*topic.Trie, len(peers)),
		localShared: map[string]*topic.Trie{},
		down:        map[string]bool{},
		union:       map[string]int{},
		keepWanted:  keepWanted,
	}
	for _, p := range peers {
		t := topic.NewTrie()
		_, _ = t.Add("#")
		r.wantDelta("#", 1)
		r.tries[p] = t
		r.shared[p] = map[string]*topic.Trie{}
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
		for _, f := range t.Filters() {
			r.wantDelta(f, -1)
		}
		t = topic.NewTrie()
		r.tries[peer] = t
		for _, g := range r.shared[peer] {
			r.sharedCount -= g.Len()
			for _, f := range g.Filters() {
				r.wantDelta(f, -1)
			}
		}
		r.shared[peer] = map[string]*topic.Trie{}
	}
	for _, f := range removed {
		if group, filter, ok, _ := topic.SplitShared(f); ok {
			r.removeShared(r.shared[peer], group, filter, true)
			continue
		}
		if t.Remove(f) {
			r.wantDelta(f, -1)
		}
	}
	for _, f := range added {
		if group, filter, ok, err := topic.SplitShared(f); ok || err != nil {
			if err != nil || !r.addShared(r.shared[peer], group, filter, true) {
				invalid = append(invalid, f)
			}
			continue
		}
		if t.Count(f) > 0 {
			continue // a set, not a multiset: the peer already de-duplicated
		}
		if _, err := t.Add(f); err != nil {
			invalid = append(invalid, f)
			continue
		}
		r.wantDelta(f, 1)
	}
	return invalid
}

// Targets appends to dst the peers that must receive a message on topic:
// every peer for a retained message (retained state must exist on every
// node), otherwise the peers whose interest matches — plus, for each shared
// subscription group with members elsewhere and none here, one member node
// (see sharedTargets).
func (r *Router) Targets(topicName string, retain bool, dst []string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, p := range r.order {
		if retain || r.tries[p].Matches(topicName) {
			dst = append(dst, p)
		}
	}
	if r.sharedCount == 0 {
		return dst
	}
	return r.sharedTargets(topicName, dst)
}

// sharedTargets gives each shared subscription group one delivery across
// the cluster. A group with a member on this node is served by the local
// broker. Otherwise, if a node already receiving the message has a member,
// its broker serves the group; else one member node is added, taking turns
// among the nodes whose link is up (a node that died stops getting turns).
// Stock Mosquitto delivers to a local group member whenever its broker gets
// a message, so a node receiving it for a plain subscriber also serves the
// group there: that extra copy is the documented deviation.
func (r *Router) sharedTargets(topicName string, dst []string) []string {
	groups := map[string][]string{} // group -> member nodes whose filters match
	for _, p := range r.order {
		for g, t := range r.shared[p] {
			if t.Matches(topicName) {
				groups[g] = append(groups[g], p)
			}
		}
	}
	names := make([]string, 0, len(groups))
	for g := range groups {
		names = append(names, g)
	}
	slices.Sort(names)
	turn := r.turn.Add(1) - 1
	chose := false
	for _, g := range names {
		if t := r.localShared[g]; t != nil && t.Matches(topicName) {
			continue
		}
		members := groups[g]
		if slices.ContainsFunc(members, func(p string) bool { return slices.Contains(dst, p) }) {
			continue
		}
		live := slices.DeleteFunc(slices.Clone(members), func(p string) bool { return r.down[p] })
		if len(live) == 0 {
			live = members // none reachable: buffer for one of them
		}
		dst = append(dst, live[turn%uint64(len(live))])
		chose = true
	}
	if chose {
		slices.Sort(dst) // same order as r.order (sorted names)
	}
	return dst
}

// ApplyLocal records a change of this node's own advertised interest; only
// its shared subscriptions matter for routing.
func (r *Router) ApplyLocal(added, removed []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range removed {
		if group, filter, ok, _ := topic.SplitShared(f); ok {
			r.removeShared(r.localShared, group, filter, false)
		}
	}
	for _, f := range added {
		if group, filter, ok, err := topic.SplitShared(f); ok && err == nil {
			r.addShared(r.localShared, group, filter, false)
		}
	}
}

// SetLink records whether peer's link is up.
func (r *Router) SetLink(peer string, up bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.down[peer] = !up
}

// addShared adds filter to group in groups; peer groups (counted) count
// toward sharedCount, the local node's do not.
func (r *Router) addShared(groups map[string]*topic.Trie, group, filter string, counted bool) bool {
	t := groups[group]
	if t == nil {
		t = topic.NewTrie()
		groups[group] = t
	}
	if t.Count(filter) > 0 {
		return true
	}
	if _, err := t.Add(filter); err != nil {
		return false
	}
	if counted {
		r.sharedCount++
		r.wantDelta(filter, 1)
	}
	return true
}

func (r *Router) removeShared(groups map[string]*topic.Trie, group, filter string, counted bool) {
	t := groups[group]
	if t == nil || !t.Remove(filter) {
		return
	}
	if t.Len() == 0 {
		delete(groups, group)
	}
	if counted {
		r.sharedCount--
		r.wantDelta(filter, -1)
	}
}

// wantDelta moves filter's count in the union; r.mu is held for writing.
func (r *Router) wantDelta(filter string, d int) {
	if !r.keepWanted {
		return
	}
	n, held := r.union[filter]
	switch {
	case n+d <= 0:
		delete(r.union, filter)
	case !held:
		// Own the bytes: filter may be a slice of a peer's frame, which the
		// union must not keep alive.
		r.union[strings.Clone(filter)] = n + d
	default:
		r.union[filter] = n + d
	}
}

// Peers returns the peer names in stable order.
func (r *Router) Peers() []string { return append([]string(nil), r.order...) }

// Receives reports whether peer's plain (non-shared) interest matches
// topicName: the message goes to it whatever its groups.
func (r *Router) Receives(peer, topicName string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	t, ok := r.tries[peer]
	return ok && t.Matches(topicName)
}

// Filters returns how many distinct filters peer advertises (shared
// subscriptions included).
func (r *Router) Filters(peer string) int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := 0
	if t, ok := r.tries[peer]; ok {
		n = t.Len()
	}
	for _, g := range r.shared[peer] {
		n += g.Len()
	}
	return n
}

// SomeFilters returns up to max of peer's filters, sorted among themselves
// (a sample, not the first ones in order: a status page must not list, or
// sort, a million).
func (r *Router) SomeFilters(peer string, max int) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []string
	if t, ok := r.tries[peer]; ok {
		out = t.SomeFilters(max)
	}
	for g, t := range r.shared[peer] {
		for _, f := range t.SomeFilters(max - len(out)) {
			out = append(out, "$share/"+g+"/"+f)
		}
	}
	slices.Sort(out)
	return out
}

// EachWanted calls fn for each distinct filter some peer needs messages
// for: every peer's plain filters and the filter part of its shared
// subscriptions. The agent's data session subscribes to these, so "#"
// comes for a peer whose interest is unknown. It calls nothing unless the
// router keeps them (NewRouter's keepWanted). fn runs with the router's
// read lock held: it must not call the router.
func (r *Router) EachWanted(fn func(filter string)) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for f := range r.union {
		fn(f)
	}
}
