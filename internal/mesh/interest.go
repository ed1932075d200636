package mesh

import (
	"sort"
	"sync"
	"time"
)

// The recent deltas hold at most as many filters as the set (a link further
// behind gets a snapshot, which costs no more than the deltas it replaces),
// and at least minDeltaLogFilters and at most maxDeltaLogFilters whatever
// the set's size. (A bound on the number of deltas sent a link behind a
// burst of single-filter deltas a snapshot of the whole set every thousand
// changes; a bound of the set's size kept a delta per subscription, a
// hundred bytes each, at a million.)
const (
	minDeltaLogFilters = 4096
	maxDeltaLogFilters = 65536
)

// localInterest is this node's advertised filter set, its version and the
// recent deltas, shared by every link's writer.
type localInterest struct {
	// recent: a snapshot sends the changes of this last stretch as deltas
	// (Config.RecentInterest; set before the mesh runs).
	recent  time.Duration
	mu      sync.Mutex
	version uint64
	set     map[string]struct{}
	log     []interestDelta // consecutive versions, the last one == version
	logSize int             // filters in log
}

type interestDelta struct {
	version        uint64
	added, removed []string
	at             int64 // when apply recorded it (unix nanos)
}

// apply records a change and reports whether anything actually changed
// (adding a present filter or removing an absent one is not a change).
func (li *localInterest) apply(added, removed []string) bool {
	li.mu.Lock()
	defer li.mu.Unlock()
	if li.set == nil {
		li.set = make(map[string]struct{})
	}
	d := interestDelta{version: li.version + 1, at: time.Now().UnixNano()}
	if len(added) > 0 {
		d.added = make([]string, 0, len(added)) // a burst adds a thousand at a time: no regrowing
	}
	for _, f := range added {
		if _, ok := li.set[f]; !ok {
			li.set[f] = struct{}{}
			d.added = append(d.added, f)
		}
	}
	for _, f := range removed {
		if _, ok := li.set[f]; ok {
			delete(li.set, f)
			d.removed = append(d.removed, f)
		}
	}
	if len(d.added) == 0 && len(d.removed) == 0 {
		return false
	}
	li.version = d.version
	li.log = append(li.log, d)
	li.logSize += d.size()
	for len(li.log) > 1 && li.logSize > min(max(len(li.set), minDeltaLogFilters), maxDeltaLogFilters) {
		li.logSize -= li.log[0].size()
		li.log[0] = interestDelta{}
		li.log = li.log[1:]
	}
	return true
}

func (d *interestDelta) size() int { return len(d.added) + len(d.removed) }

// appendFrames appends to dst the frames that bring a link at version
// *sent up to date (a snapshot when snapshot is set or the deltas it needs
// were trimmed), and advances *sent. It returns dst unchanged when the
// link is current.
//
// A snapshot leaves out the changes of the last li.recent: it is the set
// as it was before them, followed by them as deltas with their times, so
// that the peer replays what it took meanwhile for the subscriptions made
// while the link was down (a snapshot alone is applied without replay).
func (li *localInterest) appendFrames(dst []byte, sent *uint64, snapshot bool, scratch []byte) ([]byte, []byte) {
	li.mu.Lock()
	defer li.mu.Unlock()
	if !snapshot && *sent == li.version {
		return dst, scratch
	}
	first := li.version - uint64(len(li.log)) + 1 // version of li.log[0]
	var from uint64                               // index in li.log of the first delta to send
	if snapshot || *sent+1 < first || *sent > li.version {
		from = li.recentFrom(time.Now().Add(-li.recent).UnixNano())
		base, version := li.setBeforeLocked(from)
		dst, scratch = appendSnapshot(dst, scratch, version, base)
	} else {
		from = *sent + 1 - first
	}
	for _, d := range li.log[from:] {
		f := frame{typ: frameDelta, version: d.version, filters: d.added, removed: d.removed, at: d.at}
		scratch = encodeFrameBody(scratch[:0], &f)
		dst = appendFrame(dst, frameDelta, scratch)
	}
	*sent = li.version
	return dst, scratch
}

// recentFrom is the index in li.log of the first delta recorded at or
// after cutoff (len(li.log) when li.recent is 0: none is recent).
func (li *localInterest) recentFrom(cutoff int64) uint64 {
	if li.recent <= 0 {
		return uint64(len(li.log))
	}
	return uint64(sort.Search(len(li.log), func(i int) bool { return li.log[i].at >= cutoff }))
}

// setBeforeLocked returns the set as it was before li.log[from:], and its
// version: the current set with those deltas undone, latest first.
func (li *localInterest) setBeforeLocked(from uint64) ([]string, uint64) {
	undone := li.log[from:]
	version := li.version - uint64(len(undone))
	if len(undone) == 0 {
		return li.filtersLocked(), version
	}
	present := map[string]bool{} // filter -> present before the undone deltas
	for i := len(undone) - 1; i >= 0; i-- {
		for _, f := range undone[i].removed {
			present[f] = true
		}
		for _, f := range undone[i].added {
			present[f] = false
		}
	}
	out := make([]string, 0, len(li.set))
	for f := range li.set {
		if p, changed := present[f]; !changed || p {
			out = append(out, f)
		}
	}
	for f, p := range present {
		if _, now := li.set[f]; p && !now {
			out = append(out, f)
		}
	}
	return out, version
}

// appendSnapshot appends the SNAPSHOT of filters at version, in parts.
func appendSnapshot(dst, scratch []byte, version uint64, filters []string) ([]byte, []byte) {
	for {
		n := partLen(filters, func(f string) int { return len(f) + 2 })
		f := frame{typ: frameSnapshot, version: version, filters: filters[:n], more: n < len(filters)}
		scratch = encodeFrameBody(scratch[:0], &f)
		dst = appendFrame(dst, frameSnapshot, scratch)
		filters = filters[n:]
		if len(filters) == 0 {
			return dst, scratch
		}
	}
}

// partBytes bounds the body of one SNAPSHOT or DIGEST part.
const partBytes = 256 << 10

// partLen returns how many of items, at least one, fit one part given the
// encoded size of each.
func partLen[T any](items []T, size func(T) int) int {
	total := 0
	for i, it := range items {
		total += size(it)
		if total > partBytes && i > 0 {
			return i
		}
	}
	return len(items)
}

func (li *localInterest) filtersLocked() []string {
	out := make([]string, 0, len(li.set))
	for f := range li.set {
		out = append(out, f)
	}
	return out
}
