package mesh

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestInterestSnapshotThenDeltas(t *testing.T) {
	recA, recB := newRecorder(), newRecorder()
	b := startMesh(t, testConfig(t, "b", map[string]string{"a": closedAddr(t)}), recB.handlers())
	b.Advertise([]string{"b/1"}, nil)

	cfgA := testConfig(t, "a", map[string]string{"b": b.addr()})
	reg := newTestRegistry()
	cfgA.Registerer = reg
	a, err := New(cfgA, recA.handlers())
	if err != nil {
		t.Fatal(err)
	}
	a.Advertise([]string{"a/1", "a/2", "a/1"}, nil) // before Run: goes into the first snapshot
	ta := runMesh(t, a, reg)

	waitFor(t, 5*time.Second, "snapshots both ways", func() bool {
		return slices.Equal(recB.view("a"), []string{"a/1", "a/2"}) && slices.Equal(recA.view("b"), []string{"b/1"})
	})
	if ev := recB.interestEvents("a"); len(ev) != 1 || !ev[0].replace {
		t.Fatalf("first interest event should be one snapshot, got %+v", ev)
	}

	want := map[string]bool{"a/1": true, "a/2": true}
	for i := range 50 {
		add := fmt.Sprintf("x/%d", i)
		var remove []string
		if i%3 == 0 {
			remove = []string{fmt.Sprintf("x/%d", i/2)}
		}
		ta.Advertise([]string{add}, remove)
		want[add] = true
		for _, r := range remove {
			delete(want, r)
		}
	}
	ta.Advertise(nil, []string{"not-there"}) // no change: no delta
	var wantList []string
	for f := range want {
		wantList = append(wantList, f)
	}
	slices.Sort(wantList)
	waitFor(t, 5*time.Second, "deltas applied", func() bool { return slices.Equal(recB.view("a"), wantList) })
	for i, ev := range recB.interestEvents("a")[1:] {
		if ev.replace {
			t.Fatalf("event %d after the first is a snapshot: deltas should have sufficed", i+1)
		}
	}
}

// TestInterestGap: a receiving mesh that sees a delta out of sequence asks
// for a snapshot and ignores deltas until it arrives; a mesh asked for a
// snapshot sends one.
func TestInterestGap(t *testing.T) {
	rec := newRecorder()
	b := startMesh(t, testConfig(t, "b", map[string]string{"a": closedAddr(t)}), rec.handlers())
	b.Advertise([]string{"mine/1", "mine/2"}, nil)

	fake, err := dialFake(t, b.addr(), "a", "b", testSecret)
	if err != nil {
		t.Fatal(err)
	}
	first := fake.next()
	if slices.Sort(first.filters); first.typ != frameSnapshot || !slices.Equal(first.filters, []string{"mine/1", "mine/2"}) {
		t.Fatalf("first frame from the mesh: %+v, want its snapshot", first)
	}

	fake.send(frame{typ: frameSnapshot, version: 5, filters: []string{"x"}})
	fake.send(frame{typ: frameDelta, version: 6, filters: []string{"y"}})
	waitFor(t, 5*time.Second, "snapshot and delta applied", func() bool { return slices.Equal(rec.view("a"), []string{"x", "y"}) })

	fake.send(frame{typ: frameDelta, version: 8, filters: []string{"z"}}) // 7 is lost
	fake.send(frame{typ: frameDelta, version: 9, removed: []string{"x"}})
	if got := fake.next(); got.typ != frameSnapshotRequest {
		t.Fatalf("after a gap the mesh sent %+v, want SNAPSHOT_REQUEST", got)
	}
	fake.send(frame{typ: frameSnapshot, version: 9, filters: []string{"y", "z"}})
	fake.send(frame{typ: frameDelta, version: 10, filters: []string{"w"}})
	waitFor(t, 5*time.Second, "snapshot after the gap", func() bool { return slices.Equal(rec.view("a"), []string{"w", "y", "z"}) })
	for _, ev := range rec.interestEvents("a") {
		if slices.Contains(ev.added, "z") && !ev.replace {
			t.Fatal("the out-of-sequence delta was applied")
		}
	}

	// The other direction: the fake asks b for a snapshot.
	before := time.Now().UnixNano()
	b.Advertise([]string{"mine/3"}, []string{"mine/1"})
	if got := fake.next(); got.typ != frameDelta || !slices.Equal(got.filters, []string{"mine/3"}) || !slices.Equal(got.removed, []string{"mine/1"}) {
		t.Fatalf("got %+v, want the delta", got)
	} else if got.at < before || got.at > time.Now().UnixNano() {
		t.Fatalf("the delta's time %d is not when it was advertised", got.at)
	}
	fake.send(frame{typ: frameSnapshotRequest})
	got := fake.next()
	if slices.Sort(got.filters); got.typ != frameSnapshot || !slices.Equal(got.filters, []string{"mine/2", "mine/3"}) || got.version != first.version+1 {
		t.Fatalf("answer to SNAPSHOT_REQUEST: %+v", got)
	}
}

// TestLargeSnapshotAndDigestInParts (issue 17 §3): a snapshot of 200000
// filters and a digest of 300000 retained topics cross in parts no larger
// than partBytes (no frame near the 64 MiB cap, none read under the
// deadline for longer than a part takes); the receiver acts on each whole
// once — one Replace, one Digest call — and messages sent meanwhile are
// delivered.
func TestLargeSnapshotAndDigestInParts(t *testing.T) {
	const nFilters, nDigest = 200000, 300000
	recA, recB := newRecorder(), newRecorder()
	var digests [][]DigestEntry
	var dmu sync.Mutex
	hb := recB.handlers()
	hb.Digest = func(_ string, entries []DigestEntry) {
		dmu.Lock()
		digests = append(digests, slices.Clone(entries))
		dmu.Unlock()
	}
	b := startMesh(t, testConfig(t, "b", map[string]string{"a": closedAddr(t)}), hb)
	cfgA := testConfig(t, "a", map[string]string{"b": b.addr()})
	reg := newTestRegistry()
	cfgA.Registerer = reg
	a, err := New(cfgA, recA.handlers())
	if err != nil {
		t.Fatal(err)
	}
	filters := make([]string, nFilters)
	for i := range filters {
		filters[i] = fmt.Sprintf("devices/%07d/cmd", i)
	}
	a.Advertise(filters, nil) // the first snapshot carries them all
	ta := runMesh(t, a, reg)
	waitFor(t, 20*time.Second, "b to have a's 200000 filters", func() bool { return len(recB.view("a")) == nFilters })
	if ev := recB.interestEvents("a"); len(ev) != 1 || !ev[0].replace || len(ev[0].added) != nFilters {
		t.Fatalf("want one snapshot of %d filters, got %d events (first: replace %v, %d filters)", nFilters, len(ev), ev[0].replace, len(ev[0].added))
	}

	entries := make([]DigestEntry, nDigest)
	for i := range entries {
		entries[i] = DigestEntry{Topic: fmt.Sprintf("retained/%07d", i), Stamp: int64(i), Hash: uint64(i)}
	}
	if !ta.SendDigest("b", entries) {
		t.Fatal("digest not queued")
	}
	out := newOutcomes(t)
	for i := range 100 {
		if err := ta.Send(context.Background(), "b", indexed(i), out.done(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, "the digest and the messages", func() bool {
		dmu.Lock()
		defer dmu.Unlock()
		return len(digests) == 1 && out.count(Acked) == 100
	})
	dmu.Lock()
	defer dmu.Unlock()
	if !slices.Equal(digests[0], entries) {
		t.Fatalf("digest: %d entries arrived, want the %d sent, in order", len(digests[0]), nDigest)
	}
	if n := metricSum(t, reg, "moha_forward_bytes_total"); n < float64(nDigest*20) {
		t.Fatalf("only %v bytes written", n)
	}
}

// TestPartsAreBounded: however many filters or retained topics, no SNAPSHOT
// or DIGEST frame body exceeds partBytes (plus one item); every part but
// the last says more follow; together they are the whole, in order.
func TestPartsAreBounded(t *testing.T) {
	const n = 200000
	var li localInterest
	filters := make([]string, n)
	for i := range filters {
		filters[i] = fmt.Sprintf("devices/%07d/cmd", i)
	}
	li.apply(filters, nil)
	var sent uint64
	wire, _ := li.appendFrames(nil, &sent, true, nil)
	var got []string
	parts := 0
	for r := bufio.NewReader(bytes.NewReader(wire)); ; parts++ {
		typ, body, err := readFrame(r, maxFrameSize)
		if err != nil {
			break
		}
		if len(body) > partBytes+64 {
			t.Fatalf("snapshot part of %d bytes, over %d", len(body), partBytes)
		}
		f, err := decodeFrame(typ, body)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, f.filters...)
		if f.more != (len(got) < n) {
			t.Fatalf("part %d: more = %v with %d of %d filters", parts, f.more, len(got), n)
		}
	}
	slices.Sort(filters)
	if slices.Sort(got); !slices.Equal(got, filters) || parts < 2 {
		t.Fatalf("%d filters in %d parts, want all %d in several parts", len(got), parts, n)
	}

	l := &link{wake: make(chan struct{}, 1)}
	entries := make([]DigestEntry, 300000)
	for i := range entries {
		entries[i] = DigestEntry{Topic: fmt.Sprintf("retained/%07d", i), Stamp: int64(i), Hash: uint64(i)}
	}
	l.sendDigest(entries)
	var all []DigestEntry
	for parts = 0; ; parts++ {
		_, d := l.takeNotes()
		if d == nil {
			break
		}
		if body := encodeFrameBody(nil, d); len(body) > partBytes+64 {
			t.Fatalf("digest part of %d bytes, over %d", len(body), partBytes)
		}
		all = append(all, d.digest...)
		if d.more != (len(all) < len(entries)) {
			t.Fatalf("digest part %d: more = %v with %d of %d entries", parts, d.more, len(all), len(entries))
		}
	}
	if !slices.Equal(all, entries) || parts < 2 {
		t.Fatalf("%d entries in %d parts, want all %d in several", len(all), parts, len(entries))
	}
}

// TestBurstOfDeltasIsNotASnapshot: a link behind a burst of single-filter
// changes gets the deltas while they hold no more filters than the set (a
// snapshot would cost as much), and a snapshot once they hold more.
func TestBurstOfDeltasIsNotASnapshot(t *testing.T) {
	var li localInterest
	const n = 3 * minDeltaLogFilters
	for i := range n {
		li.apply([]string{fmt.Sprintf("devices/%d/cmd", i)}, nil)
	}
	types := func(sent uint64) map[byte]int {
		wire, _ := li.appendFrames(nil, &sent, false, nil)
		counts := map[byte]int{}
		for r := bufio.NewReader(bytes.NewReader(wire)); ; {
			typ, _, err := readFrame(r, maxFrameSize)
			if err != nil {
				return counts
			}
			counts[typ]++
		}
	}
	if got := types(0); got[frameDelta] != n || got[frameSnapshot] != 0 {
		t.Fatalf("a link at version 0 after %d single adds got %v, want %d deltas", n, got, n)
	}
	for i := range n / 2 {
		li.apply(nil, []string{fmt.Sprintf("devices/%d/cmd", i)})
	}
	if got := types(0); got[frameSnapshot] == 0 || got[frameDelta] != 0 {
		t.Fatalf("a link at version 0 after %d changes to a set of %d got %v, want a snapshot", n+n/2, n/2, got)
	}
	if got := types(li.version - 10); got[frameDelta] != 10 {
		t.Fatalf("a link 10 versions behind got %v, want 10 deltas", got)
	}
}

// TestSnapshotSendsRecentChangesAsDeltas: with recent set, a snapshot is
// the set before the recent changes (a recent addition left out, a recent
// removal put back), followed by those changes as deltas with their times
// and consecutive versions; without it, the set as it is.
func TestSnapshotSendsRecentChangesAsDeltas(t *testing.T) {
	li := localInterest{recent: time.Minute}
	old := time.Now().Add(-time.Hour).UnixNano()
	li.apply([]string{"old/a", "old/b", "gone/c"}, nil)
	li.log[len(li.log)-1].at = old
	li.apply([]string{"new/d"}, []string{"gone/c"})
	li.apply([]string{"new/e"}, nil)
	recentAt := li.log[len(li.log)-1].at

	frames := func(li *localInterest) []frame {
		var sent uint64
		wire, _ := li.appendFrames(nil, &sent, true, nil)
		if sent != li.version {
			t.Fatalf("sent = %d after a snapshot, want %d", sent, li.version)
		}
		var out []frame
		for r := bufio.NewReader(bytes.NewReader(wire)); ; {
			typ, body, err := readFrame(r, maxFrameSize)
			if err != nil {
				return out
			}
			f, err := decodeFrame(typ, body)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, f)
		}
	}
	got := frames(&li)
	if len(got) != 3 || got[0].typ != frameSnapshot || got[1].typ != frameDelta || got[2].typ != frameDelta {
		t.Fatalf("got %d frames, want a snapshot and two deltas", len(got))
	}
	snap := slices.Sorted(slices.Values(got[0].filters))
	if want := []string{"gone/c", "old/a", "old/b"}; !slices.Equal(snap, want) || got[0].version != 1 {
		t.Fatalf("snapshot %v at version %d, want %v at version 1", snap, got[0].version, want)
	}
	if d := got[1]; d.version != 2 || !slices.Equal(d.filters, []string{"new/d"}) || !slices.Equal(d.removed, []string{"gone/c"}) {
		t.Fatalf("first delta %+v, want version 2 adding new/d, removing gone/c", d)
	}
	if d := got[2]; d.version != 3 || !slices.Equal(d.filters, []string{"new/e"}) || d.at != recentAt {
		t.Fatalf("second delta %+v, want version 3 adding new/e at %d", d, recentAt)
	}

	li.recent = 0
	if got := frames(&li); len(got) != 1 || got[0].version != 3 || len(got[0].filters) != 4 {
		t.Fatalf("without recent: %d frames, want one snapshot of the 4 filters at version 3", len(got))
	}
}
