package replica

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/moha-project/moha/internal/mesh"
	"github.com/moha-project/moha/internal/placement"
)

var nodes = []string{"node1", "node2", "node3"}

// idHomedAt returns a client id whose bucket order starts with home, then second.
func idHomedAt(t *testing.T, home, second string) string {
	t.Helper()
	for i := range 10000 {
		id := fmt.Sprintf("client-%d", i)
		if o := placement.Order(placement.Bucket(id), nodes); o[0] == home && o[1] == second {
			return id
		}
	}
	t.Fatalf("no id homed at %s then %s", home, second)
	return ""
}

func all(string) bool { return true }

func TestTargetsFollowTheBucketOrder(t *testing.T) {
	id := idHomedAt(t, "node1", "node3")
	cases := []struct {
		self string
		live func(string) bool
		n    int
		want []string
	}{
		{"node1", all, 1, []string{"node3"}},
		{"node1", all, 2, []string{"node3", "node2"}},
		{"node1", func(n string) bool { return n != "node3" }, 1, []string{"node2"}},
		{"node3", all, 1, []string{"node1"}}, // held at its second node (failover): the home comes first
		{"node1", all, 0, nil},
		{"node1", func(string) bool { return false }, 1, nil},
	}
	for _, c := range cases {
		if got := Targets(id, c.self, nodes, c.live, c.n); !slices.Equal(got, c.want) {
			t.Errorf("Targets(self %s, n %d) = %v, want %v", c.self, c.n, got, c.want)
		}
	}
}

func note(id string, online bool, filters ...string) mesh.SessionNote {
	n := mesh.SessionNote{ID: id, Online: online, Protocol: 4}
	for _, f := range filters {
		n.Filters = append(n.Filters, mesh.SessionFilter{Filter: f, QoS: 1})
	}
	return n
}

func wantSends(t *testing.T, got []Send, want ...Send) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("sends = %+v, want %+v", got, want)
	}
	for i := range got {
		if got[i].Peer != want[i].Peer || got[i].Change.Replace != want[i].Change.Replace || !slices.EqualFunc(got[i].Change.Notes, want[i].Change.Notes, noteEqual) {
			t.Fatalf("send %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func noteEqual(a, b mesh.SessionNote) bool {
	return a.ID == b.ID && a.Drop == b.Drop && a.Online == b.Online && slices.Equal(a.Filters, b.Filters)
}

func send(peer string, replace bool, notes ...mesh.SessionNote) Send {
	return Send{Peer: peer, Change: mesh.SessionChange{Replace: replace, Notes: notes}}
}

func drop(id string) mesh.SessionNote { return mesh.SessionNote{ID: id, Drop: true} }

func TestAnnouncer(t *testing.T) {
	id := idHomedAt(t, "node1", "node3")
	a := NewAnnouncer("node1", nodes, 1)
	n1 := note(id, true, "d/1")
	wantSends(t, a.Update(n1, true))                                // no peer is up: nobody to tell
	wantSends(t, a.SetLive("node2", true), send("node2", true, n1)) // the only live peer keeps it
	wantSends(t, a.SetLive("node3", true), send("node2", false, drop(id)), send("node3", true, n1))
	n2 := note(id, false, "d/1", "d/2")
	wantSends(t, a.Update(n2, true), send("node3", false, n2)) // a change goes to the replica
	wantSends(t, a.SetLive("node3", false), send("node2", false, n2))
	if got := a.Replicas(id); !slices.Equal(got, []string{"node2"}) {
		t.Fatalf("Replicas = %v, want node2", got)
	}
	wantSends(t, a.Update(n2, false), send("node2", false, drop(id))) // ended (or now a replica here)
	wantSends(t, a.Update(n2, false))                                 // twice: nothing more
	wantSends(t, a.SetLive("node3", true), send("node3", true))       // an empty replace ends stale replicas
	if a.Held() != 0 {
		t.Fatalf("Held = %d, want 0", a.Held())
	}
}

func TestAnnouncerTwoReplicas(t *testing.T) {
	id := idHomedAt(t, "node2", "node1")
	a := NewAnnouncer("node2", nodes, 2)
	a.SetLive("node1", true)
	a.SetLive("node3", true)
	n := note(id, true, "x")
	wantSends(t, a.Update(n, true), send("node1", false, n), send("node3", false, n))
}

// TestAnnouncerNoReplicas: with session_replicas 0 the announcer keeps
// nothing (a million persistent sessions' notes would be held for nobody)
// and tells nobody anything but the empty replace a live peer gets.
func TestAnnouncerNoReplicas(t *testing.T) {
	a := NewAnnouncer("node1", nodes, 0)
	a.SetLive("node2", true)
	wantSends(t, a.Update(note("c1", true, "d/1"), true))
	if a.Held() != 0 || a.Holds("c1") {
		t.Fatalf("Held = %d, Holds(c1) = %v with no replicas, want 0 and false", a.Held(), a.Holds("c1"))
	}
	wantSends(t, a.SetLive("node3", true), send("node3", true))
}

func TestKeeper(t *testing.T) {
	k := NewKeeper(10 * time.Second)
	now := time.Unix(1000, 0)
	a1, b1, c1 := note("a", true, "a/#"), note("b", false, "b/#"), note("c", true)
	got := k.Apply("node1", mesh.SessionChange{Replace: true, Notes: []mesh.SessionNote{a1, b1, c1}}, now)
	if len(got) != 3 || got[0].Kind != Start || got[0].Holder != "node1" || k.Len() != 3 {
		t.Fatalf("first replace: %+v", got)
	}
	// A drop from a node that does not hold the session is ignored.
	if got := k.Apply("node2", mesh.SessionChange{Notes: []mesh.SessionNote{drop("a")}}, now); len(got) != 0 {
		t.Fatalf("drop from a non-holder: %+v", got)
	}
	// A replace that no longer names b ends it; a is updated.
	got = k.Apply("node1", mesh.SessionChange{Replace: true, Notes: []mesh.SessionNote{a1, c1}}, now)
	if len(got) != 3 || got[0].Kind != Update || got[2].ID != "b" || got[2].Kind != End || k.Holds("b") {
		t.Fatalf("second replace: %+v", got)
	}
	// The client of a connects at node2 (clean start 0): the replica waits
	// for node2 to claim it ...
	if got := k.ClientAt("node2", "a", false, now, now); len(got) != 0 {
		t.Fatalf("ClientAt: %+v", got)
	}
	if got := k.Expire(now.Add(9 * time.Second)); len(got) != 0 {
		t.Fatalf("expired early: %+v", got)
	}
	// ... and node2 does: a moves to holder node2.
	if got := k.Apply("node2", mesh.SessionChange{Notes: []mesh.SessionNote{a1}}, now); len(got) != 1 || got[0].Kind != Update || k.Holder("a") != "node2" {
		t.Fatalf("claim by node2: %+v", got)
	}
	if got := k.Expire(now.Add(time.Hour)); len(got) != 0 {
		t.Fatalf("a claimed replica expired: %+v", got)
	}
	// c's client connects at node3, which never claims it: it ends.
	k.ClientAt("node3", "c", false, now, now)
	if got := k.Expire(now.Add(10 * time.Second)); len(got) != 1 || got[0].ID != "c" || got[0].Kind != End {
		t.Fatalf("unclaimed move: %+v", got)
	}
	// A clean start anywhere ends the replica at once.
	if got := k.ClientAt("node2", "a", true, now, now); len(got) != 1 || got[0].Kind != End {
		t.Fatalf("clean start: %+v", got)
	}
	k.Apply("node1", mesh.SessionChange{Notes: []mesh.SessionNote{a1}}, now)
	// Announcements older than the holder's last word (sent again when a
	// link came back) change nothing: neither a clean start nor a move.
	if got := k.ClientAt("node2", "a", true, now.Add(-time.Second), now); len(got) != 0 || !k.Holds("a") {
		t.Fatalf("an old clean start ended the replica: %+v", got)
	}
	k.ClientAt("node3", "a", false, now.Add(-time.Second), now)
	if got := k.Expire(now.Add(time.Hour)); len(got) != 0 {
		t.Fatalf("an old move ended the replica: %+v", got)
	}
	if !k.Promote("a") || k.Holds("a") || k.Promote("a") {
		t.Fatal("Promote: the client's arrival makes the replica its session, once")
	}
	if k.Len() != 0 {
		t.Fatalf("Len = %d, want 0", k.Len())
	}
}

func TestRelease(t *testing.T) {
	now := time.Unix(100, 0)
	at := []time.Time{now.Add(-5 * time.Second), now.Add(-3 * time.Second), now.Add(-time.Second), now}
	cases := []struct {
		name   string
		online bool
		heard  time.Time
		want   int
	}{
		{"holder heard just now: what is older than the 3 s window goes", true, now, 2},
		{"client offline: everything stays, as at the holder", false, now, 0},
		{"link down (zero): the holder may be dead, keep all", true, time.Time{}, 0},
		// The holder's link is still up but it was last heard 1.9 s ago: it
		// may have died then, so only what it had 3 s to deliver before
		// that goes: the message of 5 s ago, not the one of 3 s ago.
		{"holder last heard 1.9 s ago (dying unnoticed)", true, now.Add(-1900 * time.Millisecond), 1},
		{"holder last heard 2.9 s ago", true, now.Add(-2900 * time.Millisecond), 0},
		{"holder last heard long ago", true, now.Add(-time.Minute), 0},
	}
	for _, c := range cases {
		if got := Release(at, 3*time.Second, c.online, c.heard); got != c.want {
			t.Errorf("%s: Release = %d, want %d", c.name, got, c.want)
		}
	}
}
