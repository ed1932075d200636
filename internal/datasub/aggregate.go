package datasub

import (
	"hash/maphash"
	"math/bits"
)

// AggregateMin is how many exact filters a single-level wildcard must stand
// for before the data session subscribes to it in their place. A few
// exact filters cost the broker little (an entry in its subscription tree
// each), while a wildcard also brings the agent every message on siblings
// nobody wants (acknowledged and dropped: the over-statement). At 256 and
// more the level is an identifier space (devices/<id>/cmd) whose siblings
// are mostly wanted, and the data session holds at most one wildcard per
// 256 exact filters of a dense set, however many there are.
const AggregateMin = 256

// Aggregation counts what Aggregate replaced.
type Aggregation struct {
	Wildcards int // single-level wildcards added in place of exact filters
	Filters   int // exact filters they replaced
}

// hashSeed is fixed for the process: the same wanted set gives the same
// aggregation every time, so the data session's filters do not flap.
var hashSeed = maphash.MakeSeed()

// candidate is an exact filter that a wildcard may replace: key is the
// hash of the key being counted (the filter with one level replaced by
// "+"; 0: none) and at where the next level starts (past the end: none);
// n and best are the count and level of the densest key so far.
type candidate struct {
	filter string
	key    uint64
	n      uint32
	best   uint16
	at     uint16
}

// done reports whether the candidate has no level left to count.
func (c *candidate) done() bool { return int(c.at) > len(c.filter) }

// Aggregate replaces dense sets of exact filters in want with single-level
// wildcards. The keys of an exact filter (no "+" or "#", not a "$" topic)
// of two levels or more are the filters obtained by replacing one of its
// levels with "+"; a key is dense when it covers at least `least` of the
// exact filters in want. Each exact filter in a dense key goes to its
// densest one (on a tie, the one replacing the earliest level), and a key
// that then stands for at least `least` filters replaces them in want
// (with no replay). The rule depends on the set alone: the same want gives
// the same result. Wildcards already in want are left as they are.
//
// At a million filters this runs on every change of interest, so keys are
// never built as strings to be counted: each level's keys are counted by
// hash in a table of counters (a sketch: colliding keys add up, so it can
// only over-count), and only the filters whose counter reaches `least`
// are counted again exactly, by full hash. Only a dense key's string is
// built, and the filters of keys whose full hashes collide stay exact.
func Aggregate(want map[string]bool, least int) Aggregation {
	cands := candidates(want)
	if least < 2 || len(cands) < least {
		return Aggregation{}
	}
	sketch := make([]uint32, sketchSize(len(cands)))
	exact := map[uint64]uint32{}
	for pos := 0; ; pos++ {
		dense, left := sketchKeys(cands, sketch, least)
		if !left {
			break
		}
		if dense {
			pickDensest(cands, pos, sketch, exact, least)
			clear(exact)
		}
		clear(sketch)
	}
	return replace(want, cands, least)
}

// sketchSize returns a power of two at least n: about one key per counter,
// so that colliding keys rarely add up to a dense count.
func sketchSize(n int) int {
	size := 1024
	for size < n {
		size *= 2
	}
	return size
}

// candidates returns the exact filters of two levels or more in want.
func candidates(want map[string]bool) []candidate {
	cands := make([]candidate, 0, len(want))
	for f := range want {
		if isCandidate(f) {
			cands = append(cands, candidate{filter: f})
		}
	}
	return cands
}

// isCandidate reports whether f is an exact filter of two levels or more,
// not a "$" topic, short enough for candidate.at.
func isCandidate(f string) bool {
	if len(f) == 0 || f[0] == '$' || len(f) >= 1<<16-1 {
		return false
	}
	levels := false
	for i := range len(f) {
		switch f[i] {
		case '+', '#':
			return false
		case '/':
			levels = true
		}
	}
	return levels
}

// sketchKeys counts the candidates in sketch per key replacing their next
// level, and records each one's key. It reports whether a counter reached
// least, and whether any candidate had a level left. Called for each level
// in turn.
func sketchKeys(cands []candidate, sketch []uint32, least int) (dense, left bool) {
	mask := uint64(len(sketch) - 1)
	for i := range cands {
		c := &cands[i]
		if c.done() {
			c.key = 0 // not in this level's count
			continue
		}
		left = true
		start := int(c.at)
		end := levelEnd(c.filter, start)
		c.key = keyHash(c.filter, start, end)
		c.at = uint16(end + 1)
		n := sketch[c.key&mask] + 1
		sketch[c.key&mask] = n
		if int(n) >= least {
			dense = true
		}
	}
	return dense, left
}

// pickDensest counts exactly the keys replacing level pos (sketchKeys'
// last) whose counter in sketch reached least, and makes such a key a
// candidate's densest when it covers more than the best so far (earlier
// levels win ties).
func pickDensest(cands []candidate, pos int, sketch []uint32, exact map[uint64]uint32, least int) {
	mask := uint64(len(sketch) - 1)
	maybe := func(c *candidate) bool {
		return c.key != 0 && int(sketch[c.key&mask]) >= least
	}
	for i := range cands {
		if c := &cands[i]; maybe(c) {
			exact[c.key]++
		}
	}
	for i := range cands {
		if c := &cands[i]; maybe(c) {
			if n := exact[c.key]; n > c.n {
				c.n, c.best = n, uint16(pos)
			}
		}
	}
}

// replace puts each key standing for at least `least` candidates in want in
// their place.
func replace(want map[string]bool, cands []candidate, least int) Aggregation {
	type group struct {
		wildcard string
		members  int
		collided bool // another key has its hash: neither is trusted
	}
	groups := map[uint64]*group{}
	for i := range cands {
		c := &cands[i]
		if int(c.n) < least {
			continue
		}
		start, end := levelBounds(c.filter, int(c.best))
		c.key = keyHash(c.filter, start, end)
		g := groups[c.key]
		if g == nil {
			g = &group{wildcard: c.filter[:start] + "+" + c.filter[end:]}
			groups[c.key] = g
		}
		if !isKey(g.wildcard, c.filter, start, end) {
			g.collided = true
		}
		g.members++
	}
	var agg Aggregation
	for i := range cands {
		c := &cands[i]
		if int(c.n) < least {
			continue
		}
		if g := groups[c.key]; !g.collided && g.members >= least {
			delete(want, c.filter)
			want[g.wildcard] = false
			agg.Filters++
		}
	}
	for _, g := range groups {
		if !g.collided && g.members >= least {
			agg.Wildcards++
		}
	}
	return agg
}

// keyHash returns the hash of filter with the level from start to end
// replaced by "+", without building that string: of what comes before the
// level and what after (which tell the level: the part before holds its
// number of separators). Never 0, which marks no key.
func keyHash(filter string, start, end int) uint64 {
	before := maphash.String(hashSeed, filter[:start])
	after := maphash.String(hashSeed, filter[end:])
	return before*0x9e3779b97f4a7c15 ^ bits.RotateLeft64(after, 31) | 1
}

// isKey reports whether w is filter with the level from start to end
// replaced by "+".
func isKey(w, filter string, start, end int) bool {
	return len(w) == start+1+len(filter)-end && w[:start] == filter[:start] && w[start] == '+' && w[start+1:] == filter[end:]
}

// levelBounds returns where level pos of filter starts and ends.
func levelBounds(filter string, pos int) (start, end int) {
	for range pos {
		start = levelEnd(filter, start) + 1
	}
	return start, levelEnd(filter, start)
}

// levelEnd returns where the level of filter starting at start ends: a
// loop, not strings.IndexByte, whose call costs more than a level's few
// bytes.
func levelEnd(filter string, start int) int {
	for i := start; i < len(filter); i++ {
		if filter[i] == '/' {
			return i
		}
	}
	return len(filter)
}
