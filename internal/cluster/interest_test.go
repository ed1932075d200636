package cluster

import (
	"fmt"
	"slices"
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
	if first.typ != frameSnapshot || !slices.Equal(first.filters, []string{"mine/1", "mine/2"}) {
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
	if got.typ != frameSnapshot || !slices.Equal(got.filters, []string{"mine/2", "mine/3"}) || got.version != first.version+1 {
		t.Fatalf("answer to SNAPSHOT_REQUEST: %+v", got)
	}
}
