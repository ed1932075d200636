package takeover

import (
	"testing"
	"time"

	"github.com/moha-project/moha/internal/interest"
	"github.com/moha-project/moha/internal/mesh"
)

// TestTakeoverNotesSentAgain: the announcements a peer whose link comes
// back is sent again are those of the last noteMemory, and an old one
// (predating the client's last connection here) ends no session here.
func TestTakeoverNotesSentAgain(t *testing.T) {
	tk := New()
	start := time.Unix(1_800_000_000, 0)
	connect := func(id string, clean bool, at time.Time) mesh.ClientNote {
		ev := interest.Event{Kind: interest.Connected, ClientID: id, Clean: clean}
		n, ok := tk.OnEvent(&ev, at)
		if !ok {
			t.Fatalf("connect of %s not announced", id)
		}
		tk.OnEvent(&interest.Event{Kind: interest.Disconnected, ClientID: id}, at)
		return n
	}
	old := connect("a", false, start)
	connect("b", false, start.Add(5*time.Minute))
	connect("c", true, start.Add(11*time.Minute)) // a's note is now past noteMemory
	if got := tk.RecentNotes(); len(got) != 2 || got[0].ID != "b" || got[1].ID != "c" {
		t.Fatalf("recentNotes = %+v, want b and c", got)
	}
	// A clean start elsewhere, announced (again) with a time before b's
	// last connection here, must not end b's newer session here.
	stale := mesh.ClientNote{ID: "b", Clean: true, At: start.Add(4 * time.Minute).UnixNano()}
	if tk.ShouldEnd(stale, true) || tk.NewerThanHere(stale) {
		t.Fatal("an announcement older than the client's connection here ended its session")
	}
	fresh := mesh.ClientNote{ID: "b", Clean: true, At: start.Add(6 * time.Minute).UnixNano()}
	if !tk.NewerThanHere(fresh) || !tk.ShouldEnd(fresh, true) {
		t.Fatal("a newer clean start elsewhere did not end the session here")
	}
	// a's connection is forgotten (past noteMemory): any announcement of it is newer.
	if !tk.NewerThanHere(mesh.ClientNote{ID: "a", At: old.At + 1}) {
		t.Fatal("a forgotten connection still counts as newer")
	}
}

// TestShouldKick: the older of two connections with one id goes; on a tie
// the node whose name sorts higher yields; the takeover's own connect line
// is not announced, and a failed takeover leaves nothing pending.
func TestShouldKick(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	cases := []struct {
		name       string
		localAt    time.Time // zero: no client connected here
		noteAt     time.Time
		self, peer string
		want       bool
	}{
		{"older here", now, now.Add(time.Second), "node1", "node2", true},
		{"newer here", now.Add(time.Second), now, "node1", "node2", false},
		{"tie, self sorts higher", now, now, "node2", "node1", true},
		{"tie, self sorts lower", now, now, "node1", "node2", false},
		{"not connected here", time.Time{}, now, "node1", "node2", false},
	}
	for _, c := range cases {
		tk := New()
		if !c.localAt.IsZero() {
			tk.OnEvent(&interest.Event{Kind: interest.Connected, ClientID: "x"}, c.localAt)
		}
		n := mesh.ClientNote{ID: "x", At: c.noteAt.UnixNano()}
		if got := tk.ShouldKick(n, c.self, c.peer); got != c.want {
			t.Errorf("%s: ShouldKick = %v, want %v", c.name, got, c.want)
		}
		if !c.want {
			continue
		}
		if !tk.KickPending("x") || tk.ConnectedHere("x") {
			t.Errorf("%s: after ShouldKick the takeover must be pending and the client no longer counted here", c.name)
		}
		ev := interest.Event{Kind: interest.Connected, ClientID: "x"}
		if _, announced := tk.OnEvent(&ev, now.Add(2*time.Second)); announced || ev.EndsWithConnection != n.Clean {
			t.Errorf("%s: the takeover's own connect line was announced", c.name)
		}
		if tk.KickPending("x") {
			t.Errorf("%s: the takeover is still pending after its connect line", c.name)
		}
	}
	tk := New()
	tk.OnEvent(&interest.Event{Kind: interest.Connected, ClientID: "y"}, now)
	tk.ShouldKick(mesh.ClientNote{ID: "y", At: now.Add(time.Second).UnixNano()}, "node1", "node2")
	tk.KickFailed("y")
	if tk.KickPending("y") {
		t.Fatal("KickFailed left the takeover pending")
	}
}

// TestLateReadDoesNotMakeAnOlderConnectionNewer: node1's agent reads its
// broker's log five seconds late (a burst), so it reads the client's connect
// line after node2's agent has read the client's newer connect line. The
// older connection, node1's, is the one that goes: its stamp is bounded by
// the second its broker logged it in, not the late reading.
func TestLateReadDoesNotMakeAnOlderConnectionNewer(t *testing.T) {
	logged := time.Unix(1_800_000_000, 0)
	node1, node2 := New(), New()
	connect := func(tk *Tracker, loggedAt, readAt time.Time) mesh.ClientNote {
		ev := interest.Event{Kind: interest.Connected, ClientID: "x", Time: loggedAt.Unix()}
		n, ok := tk.OnEvent(&ev, readAt)
		if !ok {
			t.Fatal("connect not announced")
		}
		return n
	}
	older := connect(node1, logged, logged.Add(5*time.Second))
	newer := connect(node2, logged.Add(2*time.Second), logged.Add(2100*time.Millisecond))
	if !node1.ShouldKick(newer, "node1", "node2") {
		t.Error("node1 kept the older connection")
	}
	if node2.ShouldKick(older, "node2", "node1") {
		t.Error("node2 closed the newer connection")
	}
	if older.At >= logged.Add(time.Second).UnixNano() || older.At < logged.UnixNano() {
		t.Errorf("the late-read connection is stamped %v, outside the second it was logged in", time.Unix(0, older.At))
	}
}
