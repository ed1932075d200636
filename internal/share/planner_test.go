package share

import (
	"fmt"
	"slices"
	"testing"
)

func groups(w [][]Group) []string {
	var out []string
	for i, slot := range w {
		for _, g := range slot {
			out = append(out, fmt.Sprintf("%d:%s", i, g.Subscription()))
		}
	}
	return out
}

// TestWant is the decision table of the memberships an agent holds.
func TestWant(t *testing.T) {
	type peer struct {
		name   string
		up     bool
		filter []string
	}
	cases := []struct {
		name  string
		slots int
		local []string
		peers []peer
		want  []string
	}{
		{"no local member: the local broker never serves the group", 2,
			nil, []peer{{"b", true, []string{"$share/g/t"}}}, nil},
		{"members only here: nothing to spread", 2,
			[]string{"$share/g/t"}, []peer{{"b", true, []string{"t"}}}, nil},
		{"one member node elsewhere: one membership", 2,
			[]string{"$share/g/t"}, []peer{{"b", true, []string{"$share/g/t"}}, {"c", true, nil}}, []string{"0:$share/g/t"}},
		{"two member nodes elsewhere: two memberships", 2,
			[]string{"$share/g/t"}, []peer{{"b", true, []string{"$share/g/t"}}, {"c", true, []string{"$share/g/t"}}},
			[]string{"0:$share/g/t", "1:$share/g/t"}},
		{"a member node whose link is down gets no share", 2,
			[]string{"$share/g/t"}, []peer{{"b", false, []string{"$share/g/t"}}, {"c", true, []string{"$share/g/t"}}},
			[]string{"0:$share/g/t"}},
		{"same filter, other group name: another group", 2,
			[]string{"$share/g/t"}, []peer{{"b", true, []string{"$share/h/t"}}}, nil},
		{"a plain filter here overlapping the group's: no membership", 2,
			[]string{"$share/g/a/+", "x/#"}, []peer{{"b", true, []string{"$share/g/a/+"}}}, []string{"0:$share/g/a/+"}},
		{"overlap on a plain filter here", 2,
			[]string{"$share/g/a/+", "+/b"}, []peer{{"b", true, []string{"$share/g/a/+"}}}, nil},
		{"a degraded node advertises #: no membership", 2,
			[]string{"$share/g/a/+", "#"}, []peer{{"b", true, []string{"$share/g/a/+"}}}, nil},
		{"spreading off (prefer_local)", 0,
			[]string{"$share/g/t"}, []peer{{"b", true, []string{"$share/g/t"}}}, nil},
		{"two groups", 1,
			[]string{"$share/g/t", "$share/h/u/#"}, []peer{{"b", true, []string{"$share/h/u/#", "$share/g/t"}}},
			[]string{"0:$share/g/t", "0:$share/h/u/#"}},
		{"two groups on one filter here: neither", 1,
			[]string{"$share/g/t", "$share/h/t"}, []peer{{"b", true, []string{"$share/h/t", "$share/g/t"}}}, nil},
		{"two groups on overlapping filters here: neither", 1,
			[]string{"$share/g/t/+", "$share/h/+/x", "$share/k/other"}, []peer{{"b", true, []string{"$share/h/+/x", "$share/g/t/+", "$share/k/other"}}},
			[]string{"0:$share/k/other"}},
		{"another group elsewhere only does not count", 1,
			[]string{"$share/g/t"}, []peer{{"b", true, []string{"$share/h/t", "$share/g/t"}}}, []string{"0:$share/g/t"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var names []string
			for _, p := range c.peers {
				names = append(names, p.name)
			}
			p, local := newTestPlanner(names, c.slots, nil)
			local(c.local, nil)
			for _, peer := range c.peers {
				p.Peer(peer.name, true, peer.filter, nil)
				p.SetLink(peer.name, peer.up)
			}
			if got := groups(p.Want()); !slices.Equal(got, c.want) {
				t.Fatalf("Want = %v, want %v", got, c.want)
			}
		})
	}
}

func TestWantFollowsChanges(t *testing.T) {
	calls := 0
	p, local := newTestPlanner([]string{"b"}, 1, func() { calls++ })
	local([]string{"$share/g/t"}, nil)
	p.Peer("b", false, []string{"$share/g/t"}, nil)
	p.SetLink("b", true)
	if got := groups(p.Want()); !slices.Equal(got, []string{"0:$share/g/t"}) {
		t.Fatalf("Want = %v", got)
	}
	p.Peer("b", false, nil, []string{"$share/g/t"})
	if got := groups(p.Want()); got != nil {
		t.Fatalf("after the peer's member left: Want = %v", got)
	}
	p.Peer("b", true, []string{"$share/g/t"}, nil)
	local([]string{"t"}, nil) // a plain subscriber here now
	if got := groups(p.Want()); got != nil {
		t.Fatalf("with a plain subscriber here: Want = %v", got)
	}
	local(nil, []string{"t"})
	local(nil, []string{"$share/g/t"})
	if got := groups(p.Want()); got != nil {
		t.Fatalf("after the local member left: Want = %v", got)
	}
	if calls != 8 {
		t.Fatalf("notify called %d times, want once per change (8)", calls)
	}
	p.Peer("unknown", true, []string{"$share/g/t"}, nil) // ignored, no panic
}

// TestDecide is the decision table for a message a membership took.
func TestDecide(t *testing.T) {
	g := Group{"g", "t"}
	p, _ := newTestPlanner([]string{"b", "c", "d"}, 3, nil)
	for _, name := range []string{"b", "c", "d"} {
		p.Peer(name, true, []string{"$share/g/t"}, nil)
		p.SetLink(name, true)
	}
	p.SetLink("d", false)
	none := func(string) bool { return false }
	var got []string
	for range 4 {
		d := p.Decide(g, none)
		if d.Action != Forward {
			t.Fatalf("Decide = %v, want Forward", d)
		}
		got = append(got, d.Peer)
	}
	if want := []string{"b", "c", "b", "c"}; !slices.Equal(got, want) {
		t.Fatalf("forwarded to %v, want turns over the reachable members %v", got, want)
	}
	if d := p.Decide(g, func(peer string) bool { return peer == "c" }); d.Action != ServedElsewhere || d.Peer != "c" {
		t.Fatalf("a member node receiving the message anyway: Decide = %+v, want ServedElsewhere by c", d)
	}
	if d := p.Decide(g, func(peer string) bool { return peer == "d" }); d.Action != Forward {
		t.Fatalf("an unreachable node receiving it does not serve the group: Decide = %+v", d)
	}
	if d := p.Decide(Group{"h", "t"}, none); d.Action != Keep {
		t.Fatalf("a group with no member elsewhere: Decide = %+v, want Keep", d)
	}
	p.SetLink("b", false)
	p.SetLink("c", false)
	if d := p.Decide(g, none); d.Action != Keep {
		t.Fatalf("no member node reachable: Decide = %+v, want Keep", d)
	}
}

func TestParseGroup(t *testing.T) {
	for f, want := range map[string]bool{"$share/g/a/#": true, "a/#": false, "$share//a": false, "$share/g": false, "$share/g+/a": false} {
		if _, ok := ParseGroup(f); ok != want {
			t.Errorf("ParseGroup(%q) ok = %v, want %v", f, ok, want)
		}
	}
	if g, _ := ParseGroup("$share/g/a/#"); g != (Group{"g", "a/#"}) || g.Subscription() != "$share/g/a/#" {
		t.Fatalf("ParseGroup = %+v", g)
	}
}

// newTestPlanner returns a planner and the function that changes this
// node's advertised interest: the set the planner reads plain filters from
// first (as the agent's interest table is), then the planner.
func newTestPlanner(peers []string, slots int, notify func()) (*Planner, func(added, removed []string)) {
	advertised := map[string]bool{}
	plain := func(yield func(string) bool) {
		for f := range advertised {
			if _, shared := ParseGroup(f); !shared && !yield(f) {
				return
			}
		}
	}
	p := NewPlanner(peers, slots, plain, notify)
	return p, func(added, removed []string) {
		for _, f := range removed {
			delete(advertised, f)
		}
		for _, f := range added {
			advertised[f] = true
		}
		p.Local(added, removed)
	}
}
