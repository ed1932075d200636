package interest

import (
	"slices"
	"sync"
	"testing"
)

// TestSessionHookAndInfo: every write that changes a session reports its
// id once, and Session gives its filters with the QoS of the last
// subscription to each.
func TestSessionHookAndInfo(t *testing.T) {
	tab, _ := readyTable(t)
	var mu sync.Mutex
	var got [][]string
	tab.SetSessionHook(func(ids []string) {
		mu.Lock()
		got = append(got, ids)
		mu.Unlock()
	})
	take := func() [][]string {
		mu.Lock()
		defer mu.Unlock()
		g := got
		got = nil
		return g
	}
	apply(t, tab, lineConnect("dev1", 4, false))
	apply(t, tab, raw(TopicSubscribe, "dev1 2 devices/1/cmd"))
	apply(t, tab, raw(TopicSubscribe, "dev1 0 all/#"))
	apply(t, tab, raw(TopicSubscribe, "dev1 1 all/#")) // again, another QoS
	if g := take(); len(g) != 4 || !slices.Equal(g[0], []string{"dev1"}) {
		t.Fatalf("hook calls = %q, want 4 for dev1", g)
	}
	in, ok := tab.Session("dev1")
	want := []Filter{{"all/#", 1}, {"devices/1/cmd", 2}}
	if !ok || !in.Persistent() || !in.Connected || in.Protocol != 4 || !slices.Equal(in.Filters, want) {
		t.Fatalf("Session(dev1) = %+v, %v; want persistent, connected, p4, %v", in, ok, want)
	}
	apply(t, tab, lineDisconnect("dev1"))
	if in, _ := tab.Session("dev1"); in.Connected {
		t.Fatal("dev1 connected after its disconnect line")
	}
	apply(t, tab, lineConnect("clean", 4, true))
	apply(t, tab, lineDisconnect("clean")) // a 3.1.1 clean session ends here
	if g := take(); len(g) != 3 || !slices.Equal(g[2], []string{"clean"}) {
		t.Fatalf("hook calls = %q", g)
	}
	if _, ok := tab.Session("clean"); ok {
		t.Fatal("an ended clean session is still known")
	}
	ps := tab.PersistentSessions()
	if len(ps) != 1 || ps[0].ID != "dev1" {
		t.Fatalf("PersistentSessions() = %+v, want dev1 only", ps)
	}
	apply(t, tab, lineUnsub("dev1", "all/#"))
	if g := take(); len(g) != 1 {
		t.Fatalf("hook calls after unsubscribe = %q", g)
	}
	if in, _ := tab.Session("dev1"); !slices.Equal(in.Filters, []Filter{{"devices/1/cmd", 2}}) {
		t.Fatalf("filters after unsubscribe = %v", in.Filters)
	}
}
