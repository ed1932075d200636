package topic

import "strings"

// Trie is a set of topic filters with reference counts, so that a thousand clients holding
// the same filter cost one entry. It answers which filters match a topic name by walking the
// topic's levels with index arithmetic: matching allocates nothing.
//
// A Trie is not safe for concurrent use: its owner guards it (for example with a
// sync.RWMutex, taking the read lock for Matches, Count, Len, Filters and MatchFunc). The zero
// value is not usable; create one with NewTrie.
type Trie struct {
	root     *node
	distinct int // filters whose count is above zero
}

// node is one level of a filter. A leaf (most nodes of a large trie) is only its count and
// filter; what leads further hangs in children.
type node struct {
	kids   *children // nil while nothing hangs below
	count  int       // references to the filter that ends at this node
	filter string    // that filter, kept so matches can report it without building it
}

// children are what hangs below a node. Literal levels hang in a map, except that a node
// with one literal child keeps it inline: in a fleet's filters (devices/<id>/cmd) every
// <id> leads to one level, and a map per filter was most of a large trie's memory. The
// wildcards get dedicated slots, like nats-server's pwc/fwc, so that matching a level costs
// one lookup plus two pointer checks whatever the number of filters.
type children struct {
	one     string           // the one literal level, when many is nil and oneNode is not
	oneNode *node            // its node
	many    map[string]*node // literal levels, from the second one on
	plus    *node            // child for a '+' level
	hash    *node            // child for a '#' level; always a leaf
}

// NewTrie returns an empty Trie.
func NewTrie() *Trie {
	return &Trie{root: &node{}}
}

// Add inserts one reference to filter f and reports whether f was not present before (its
// count went from 0 to 1). An invalid filter returns an error wrapping ErrInvalidFilter and
// changes nothing.
func (t *Trie) Add(f string) (added bool, err error) {
	if err := ValidateFilter(f); err != nil {
		return false, err
	}
	if n := t.find(f); n != nil && n.count > 0 {
		n.count++
		return false, nil
	}
	// Own the bytes: map keys and n.filter are slices of f, and f may be a slice of a larger
	// buffer (a packet) that the trie must not keep alive.
	f = strings.Clone(f)
	n := t.root
	for start := 0; start <= len(f); {
		end := levelEnd(f, start)
		n = n.childOrCreate(f[start:end])
		start = end + 1
	}
	n.count, n.filter = 1, f
	t.distinct++
	return true, nil
}

// childOrCreate returns n's child for level, creating it if needed.
func (n *node) childOrCreate(level string) *node {
	if n.kids == nil {
		n.kids = &children{}
	}
	k := n.kids
	if slot := k.slot(level); slot != nil {
		if *slot == nil {
			*slot = &node{}
		}
		return *slot
	}
	child := k.literal(level)
	if child == nil {
		child = &node{}
		k.putLiteral(level, child)
	}
	return child
}

// slot returns the wildcard slot for level, or nil for a literal level.
func (k *children) slot(level string) **node {
	switch level {
	case "+":
		return &k.plus
	case "#":
		return &k.hash
	}
	return nil
}

// literal returns the child for literal level, or nil.
func (k *children) literal(level string) *node {
	if k.many != nil {
		return k.many[level]
	}
	if k.oneNode != nil && k.one == level {
		return k.oneNode
	}
	return nil
}

// putLiteral adds child for a literal level not present yet.
func (k *children) putLiteral(level string, child *node) {
	switch {
	case k.many != nil:
		k.many[level] = child
	case k.oneNode == nil:
		k.one, k.oneNode = level, child
	default:
		k.many = map[string]*node{k.one: k.oneNode, level: child}
		k.one, k.oneNode = "", nil
	}
}

// deleteLiteral removes the child for a literal level. A map down to one child gives way
// to the inline one (a map never shrinks: churn must not keep its buckets alive).
func (k *children) deleteLiteral(level string) {
	if k.many == nil {
		if k.oneNode != nil && k.one == level {
			k.one, k.oneNode = "", nil
		}
		return
	}
	delete(k.many, level)
	if len(k.many) == 1 {
		for name, child := range k.many {
			k.one, k.oneNode = name, child
		}
		k.many = nil
	}
}

// eachLiteral calls fn for every literal child until fn returns false; it reports whether
// every call returned true.
func (k *children) eachLiteral(fn func(level string, child *node) bool) bool {
	if k.many == nil {
		return k.oneNode == nil || fn(k.one, k.oneNode)
	}
	for name, child := range k.many {
		if !fn(name, child) {
			return false
		}
	}
	return true
}

func (k *children) empty() bool {
	return k.oneNode == nil && k.many == nil && k.plus == nil && k.hash == nil
}

// child returns n's child for level, or nil.
func (n *node) child(level string) *node {
	if n.kids == nil {
		return nil
	}
	if slot := n.kids.slot(level); slot != nil {
		return *slot
	}
	return n.kids.literal(level)
}

// find returns the node where filter f ends, or nil if there is none. The node may have a
// zero count when it only leads to longer filters.
func (t *Trie) find(f string) *node {
	n := t.root
	for start := 0; start <= len(f) && n != nil; {
		end := levelEnd(f, start)
		n = n.child(f[start:end])
		start = end + 1
	}
	return n
}

// Remove drops one reference to filter f and reports whether f is now gone (its count went
// to 0). Removing an absent filter returns false. Nodes left without filters or children are
// pruned, so memory follows the live filters, not the history of subscriptions.
func (t *Trie) Remove(f string) (removed bool) {
	if !t.root.remove(f, 0) {
		return false
	}
	t.distinct--
	return true
}

// remove drops one reference to f from the subtree under n, where f[start:] are the levels
// still to walk, and reports whether f's count reached zero. On the way back up, children
// left empty are unlinked.
func (n *node) remove(f string, start int) (gone bool) {
	if start > len(f) {
		if n.count == 0 {
			return false
		}
		n.count--
		if n.count > 0 {
			return false
		}
		n.filter = ""
		return true
	}
	end := levelEnd(f, start)
	level := f[start:end]
	child := n.child(level)
	if child == nil {
		return false
	}
	gone = child.remove(f, end+1)
	if gone && child.empty() {
		n.unlink(level)
	}
	return gone
}

// empty reports whether n holds no filter and leads to none.
func (n *node) empty() bool {
	return n.count == 0 && n.kids == nil
}

// unlink removes n's child for level; n keeps no children once it has none.
func (n *node) unlink(level string) {
	k := n.kids
	if slot := k.slot(level); slot != nil {
		*slot = nil
	} else {
		k.deleteLiteral(level)
	}
	if k.empty() {
		n.kids = nil
	}
}

// Count returns the reference count of filter f (0 if absent).
func (t *Trie) Count(f string) int {
	if n := t.find(f); n != nil {
		return n.count
	}
	return 0
}

// Len returns the number of distinct filters.
func (t *Trie) Len() int {
	return t.distinct
}

// Filters returns the distinct filters, in no particular order.
func (t *Trie) Filters() []string {
	out := make([]string, 0, t.distinct)
	t.root.each(func(n *node) {
		if n.count > 0 {
			out = append(out, n.filter)
		}
	})
	return out
}

// SomeFilters returns up to max distinct filters, in no particular order: a
// sample for a status page, without listing a million.
func (t *Trie) SomeFilters(max int) []string {
	out := make([]string, 0, min(max, t.distinct))
	t.root.eachUntil(func(n *node) bool {
		if len(out) == max {
			return false
		}
		if n.count > 0 {
			out = append(out, n.filter)
		}
		return true
	})
	return out
}

// eachUntil calls fn for n and the nodes below it until fn returns false;
// it reports whether every call returned true.
func (n *node) eachUntil(fn func(*node) bool) bool {
	if !fn(n) {
		return false
	}
	k := n.kids
	if k == nil {
		return true
	}
	return k.eachLiteral(func(_ string, child *node) bool { return child.eachUntil(fn) }) &&
		(k.plus == nil || k.plus.eachUntil(fn)) &&
		(k.hash == nil || k.hash.eachUntil(fn))
}

// each calls fn for n and every node below it.
func (n *node) each(fn func(*node)) {
	fn(n)
	k := n.kids
	if k == nil {
		return
	}
	k.eachLiteral(func(_ string, child *node) bool {
		child.each(fn)
		return true
	})
	if k.plus != nil {
		k.plus.each(fn)
	}
	if k.hash != nil {
		k.hash.each(fn)
	}
}

// nodeCount returns the number of nodes, root included; tests use it to check pruning.
func (t *Trie) nodeCount() int {
	count := 0
	t.root.each(func(*node) { count++ })
	return count
}

// stopAtFirst is the MatchFunc callback behind Matches. It captures nothing, so passing it
// costs no allocation.
func stopAtFirst(string, int) bool { return false }

// Matches reports whether any filter in the trie matches topic name t. It stops at the first
// match and does not allocate.
func (t *Trie) Matches(topic string) bool {
	return !t.walk(topic, stopAtFirst)
}

// MatchFunc calls fn for every distinct filter matching topic name t, with its reference
// count, until fn returns false. Each filter is reported once. It allocates nothing itself.
func (t *Trie) MatchFunc(topic string, fn func(filter string, count int) bool) {
	t.walk(topic, fn)
}

// walk reports the filters matching topic to fn; it returns false if fn asked to stop.
func (t *Trie) walk(topic string, fn func(string, int) bool) bool {
	if !strings.HasPrefix(topic, "$") {
		return t.root.walk(topic, 0, fn)
	}
	// A topic starting with '$' never matches a filter whose first level is a wildcard
	// [MQTT-4.7.2-1]: from the root, follow the literal level only.
	end := levelEnd(topic, 0)
	if child := t.root.child(topic[:end]); child != nil {
		return child.walk(topic, end+1, fn)
	}
	return true
}

// walk reports the filters under n that match topic[start:], the levels not consumed yet
// (none when start > len(topic); "a/" has two levels, the second empty). It returns false if
// fn asked to stop.
func (n *node) walk(topic string, start int, fn func(string, int) bool) bool {
	k := n.kids
	// '#' matches all remaining levels, and also none: "a/#" matches "a" [MQTT-4.7.1-2].
	if k != nil && k.hash != nil && !fn(k.hash.filter, k.hash.count) {
		return false
	}
	if start > len(topic) {
		return n.count == 0 || fn(n.filter, n.count)
	}
	if k == nil {
		return true
	}
	end := levelEnd(topic, start)
	// Levels compare exactly: case-sensitive, empty levels included [MQTT-4.7.3-4].
	if child := k.literal(topic[start:end]); child != nil && !child.walk(topic, end+1, fn) {
		return false
	}
	// '+' matches exactly one level, an empty one too ("a/+" matches "a/").
	if k.plus != nil && !k.plus.walk(topic, end+1, fn) {
		return false
	}
	return true
}

// Overlaps reports whether some topic name matches both filter f and a filter in the trie
// (a/+ and +/b overlap on a/b; a/+ and a/b/c do not). f must be a valid filter.
func (t *Trie) Overlaps(f string) bool {
	return t.root.overlaps(f, 0, true)
}

// overlaps reports whether a filter under n overlaps f[start:]. At the root, topics starting
// with '$' match no filter whose first level is a wildcard [MQTT-4.7.2-1].
func (n *node) overlaps(f string, start int, root bool) bool {
	dollar := root && strings.HasPrefix(f, "$")
	k := n.kids
	if k != nil && k.hash != nil && !dollar {
		return true // '#' matches whatever f's remaining levels match
	}
	if start > len(f) {
		return n.count > 0
	}
	end := levelEnd(f, start)
	level := f[start:end]
	if level == "#" && n.count > 0 {
		return true // "a/#" matches "a"
	}
	if k == nil {
		return false
	}
	switch level {
	case "#":
		// A pruned trie keeps no node without a filter below it.
		return !k.eachLiteral(func(name string, _ *node) bool {
			return root && strings.HasPrefix(name, "$")
		}) || k.plus != nil
	case "+":
		if !k.eachLiteral(func(name string, child *node) bool {
			return (root && strings.HasPrefix(name, "$")) || !child.overlaps(f, end+1, false)
		}) {
			return true
		}
	default:
		if child := k.literal(level); child != nil && child.overlaps(f, end+1, false) {
			return true
		}
	}
	return !dollar && k.plus != nil && k.plus.overlaps(f, end+1, false)
}
