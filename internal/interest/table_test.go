package interest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
)

// line is one log message as the broker publishes it.
type line struct {
	topic   string
	payload []byte
}

// raw builds a line from its text (timestamp prefix added).
func raw(topic, text string) line { return line{topic, []byte(ts + text)} }

// Line builders, in the broker's formats.

func lineConnect(id string, protocol int, clean bool) line {
	p := map[int]int{3: 1, 4: 2, 5: 5}[protocol]
	c := 0
	if clean {
		c = 1
	}
	return raw(TopicNotice, fmt.Sprintf("New client connected from 127.0.0.1:5555 as %s (p%d, c%d, k60).", id, p, c))
}

func lineSub(id string, filter string) line {
	return raw(TopicSubscribe, id+" 1 "+filter)
}

func lineUnsub(id string, filter string) line {
	return raw(TopicUnsubscribe, id+" "+filter)
}

func lineDisconnect(id string) line {
	return raw(TopicNotice, "Client "+id+" disconnected.")
}

func lineTakeover(id string) line {
	return raw(TopicError, "Client "+id+" already connected, closing old connection.")
}

func lineExpire(id string) line {
	return raw(TopicNotice, "Expiring client "+id+" due to timeout.")
}

// change is one onChange call.
type change struct{ added, removed []string }

// recorder records onChange calls and the Advertised set they imply.
type recorder struct {
	mu      sync.Mutex
	calls   []change
	model   map[string]bool
	running bool
	t       testing.TB
}

func newRecorder(t testing.TB) *recorder {
	return &recorder{model: map[string]bool{everything: true}, t: t}
}

func (r *recorder) onChange(added, removed []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running {
		r.t.Errorf("onChange called concurrently with itself")
	}
	r.running = true
	defer func() { r.running = false }()
	r.calls = append(r.calls, change{added, removed})
	for _, f := range removed {
		if !r.model[f] {
			r.t.Errorf("onChange removed %q, which was not advertised", f)
		}
		delete(r.model, f)
	}
	for _, f := range added {
		if r.model[f] {
			r.t.Errorf("onChange added %q, which was already advertised", f)
		}
		r.model[f] = true
	}
}

// take returns and forgets the calls recorded so far.
func (r *recorder) take() []change {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.calls
	r.calls = nil
	return c
}

func (r *recorder) set() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.model))
	for f := range r.model {
		out = append(out, f)
	}
	slices.Sort(out)
	return out
}

func apply(t testing.TB, tab *Table, l line) {
	t.Helper()
	if err := tab.Apply(l.topic, l.payload); err != nil {
		t.Fatalf("Apply(%s, %q): %v", l.topic, l.payload, err)
	}
}

func (l line) applyTo(tab *Table) error { return tab.Apply(l.topic, l.payload) }

// readyTable returns an empty table that has been reconciled (not degraded)
// and a recorder whose calls so far are discarded.
func readyTable(t testing.TB, self ...string) (*Table, *recorder) {
	t.Helper()
	rec := newRecorder(t)
	tab := NewTable(self, rec.onChange)
	tab.Reconcile(0)
	if d, reason := tab.Degraded(); d {
		t.Fatalf("still degraded after Reconcile(0): %s", reason)
	}
	rec.take()
	return tab, rec
}

func wantAdvertised(t testing.TB, tab *Table, rec *recorder, want ...string) {
	t.Helper()
	if want == nil {
		want = []string{}
	}
	if got := tab.Advertised(); !slices.Equal(got, want) {
		t.Fatalf("Advertised() = %q, want %q", got, want)
	}
	if got := rec.set(); !slices.Equal(got, want) {
		t.Fatalf("set implied by onChange = %q, want %q", got, want)
	}
}

func wantCalls(t testing.TB, rec *recorder, want ...change) {
	t.Helper()
	got := rec.take()
	if len(got) != len(want) {
		t.Fatalf("onChange calls = %v, want %v", got, want)
	}
	for i := range got {
		if !slices.Equal(got[i].added, want[i].added) || !slices.Equal(got[i].removed, want[i].removed) {
			t.Fatalf("onChange call %d = %v, want %v", i, got[i], want[i])
		}
	}
}

func added(f ...string) change   { return change{added: f} }
func removed(f ...string) change { return change{removed: f} }

func TestTableStartsDegraded(t *testing.T) {
	rec := newRecorder(t)
	tab := NewTable(nil, rec.onChange)
	if d, reason := tab.Degraded(); !d || reason != StartupReason {
		t.Fatalf("Degraded() = %v, %q; want true, %q", d, reason, StartupReason)
	}
	wantAdvertised(t, tab, rec, "#")
	apply(t, tab, lineConnect("c1", 5, true))
	apply(t, tab, lineSub("c1", "a/b"))
	wantCalls(t, rec) // degraded: "#" covers everything
	tab.SetOwnSubscriptions(2)
	tab.Reconcile(3)
	wantCalls(t, rec, change{added: []string{"a/b"}, removed: []string{"#"}})
	wantAdvertised(t, tab, rec, "a/b")
	if st := tab.Stats(); st.Degraded || st.DegradedReason != "" || st.BrokerCount != 3 || st.Expected != 3 || st.OverStated {
		t.Fatalf("Stats() = %+v", st)
	}
}

func TestTableSubscribeUnsubscribe(t *testing.T) {
	tab, rec := readyTable(t)
	apply(t, tab, lineConnect("c1", 5, true))
	apply(t, tab, lineSub("c1", "a/+"))
	wantCalls(t, rec, added("a/+"))
	apply(t, tab, lineSub("c1", "a/+")) // same filter again: one subscription
	wantCalls(t, rec)
	apply(t, tab, lineSub("c1", "topic with space/#"))
	wantCalls(t, rec, added("topic with space/#"))
	wantAdvertised(t, tab, rec, "a/+", "topic with space/#")
	if st := tab.Stats(); st.Subscriptions != 2 || st.Filters != 2 || st.Clients != 1 || st.Connected != 1 {
		t.Fatalf("Stats() = %+v", st)
	}
	apply(t, tab, lineUnsub("c1", "a/+"))
	wantCalls(t, rec, removed("a/+"))
	apply(t, tab, lineUnsub("c1", "never/subscribed")) // logged even if absent
	wantCalls(t, rec)
	wantAdvertised(t, tab, rec, "topic with space/#")
	if got := tab.Clients(); !slices.Equal(got["c1"], []string{"topic with space/#"}) || len(got) != 1 {
		t.Fatalf("Clients() = %q", got)
	}
}

func TestTableMultiset(t *testing.T) {
	tab, rec := readyTable(t)
	apply(t, tab, lineConnect("c1", 5, true))
	apply(t, tab, lineConnect("c2", 4, true))
	apply(t, tab, lineConnect("c3", 4, true))
	apply(t, tab, lineSub("c1", "x"))
	apply(t, tab, lineSub("c2", "x"))
	apply(t, tab, lineSub("c2", "$share/g/x"))
	apply(t, tab, lineSub("c3", "$share/g/x"))
	apply(t, tab, lineSub("c2", "$share/g/y"))
	wantCalls(t, rec, added("x"), added("$share/g/x"), added("$share/g/y"))
	wantAdvertised(t, tab, rec, "$share/g/x", "$share/g/y", "x")
	apply(t, tab, lineUnsub("c1", "x"))
	wantCalls(t, rec) // c2 still holds x
	apply(t, tab, lineUnsub("c2", "x"))
	wantCalls(t, rec, removed("x"))
	apply(t, tab, lineUnsub("c2", "$share/g/x"))
	wantCalls(t, rec) // c3 still a member of g for x
	apply(t, tab, lineUnsub("c3", "$share/g/x"))
	wantCalls(t, rec, removed("$share/g/x"))
	wantAdvertised(t, tab, rec, "$share/g/y")
	if got := tab.Clients()["c2"]; !slices.Equal(got, []string{"$share/g/y"}) {
		t.Fatalf("Clients()[c2] = %q", got)
	}
}

func TestTableDisconnect(t *testing.T) {
	tab, rec := readyTable(t)
	apply(t, tab, lineConnect("clean", 4, true))
	apply(t, tab, lineConnect("persistent", 4, false))
	apply(t, tab, lineSub("clean", "c"))
	apply(t, tab, lineSub("persistent", "p"))
	rec.take()

	apply(t, tab, lineDisconnect("clean"))
	wantCalls(t, rec, removed("c"))
	apply(t, tab, raw(TopicNotice, "Client persistent has exceeded timeout, disconnecting."))
	wantCalls(t, rec) // the session stays, offline, with its filters
	wantAdvertised(t, tab, rec, "p")
	if st := tab.Stats(); st.Clients != 1 || st.Connected != 0 || st.Uncertain != 0 {
		t.Fatalf("Stats() = %+v", st)
	}

	apply(t, tab, lineConnect("persistent", 4, false)) // c0: the broker restores the session
	wantAdvertised(t, tab, rec, "p")
	apply(t, tab, lineDisconnect("persistent"))
	apply(t, tab, lineConnect("persistent", 4, true)) // c1: the session starts empty
	wantCalls(t, rec, removed("p"))
	wantAdvertised(t, tab, rec)

	apply(t, tab, lineDisconnect("nobody")) // unknown ids: nothing to do
	apply(t, tab, raw(TopicNotice, "Client <unknown> closed its connection."))
}

func TestTableUncertainV5(t *testing.T) {
	tab, rec := readyTable(t)
	apply(t, tab, lineConnect("v5", 5, false))
	apply(t, tab, lineSub("v5", "a"))
	apply(t, tab, lineDisconnect("v5"))
	// The v5 session expiry interval is not logged: keep the filters.
	wantAdvertised(t, tab, rec, "a")
	if st := tab.Stats(); st.Uncertain != 1 || st.Clients != 1 || st.Connected != 0 {
		t.Fatalf("Stats() = %+v", st)
	}
	apply(t, tab, lineConnect("v5", 5, false))
	if st := tab.Stats(); st.Uncertain != 0 || st.Connected != 1 {
		t.Fatalf("Stats() after reconnect = %+v", st)
	}
}

// TestTableV5CleanStartOutlivesConnection: an MQTT v5 session opened with
// clean start 1 lives on after its connection for an expiry the log does
// not show: kept, offline and uncertain, until the broker's counters prove
// it gone. An MQTT 3.1.1 clean session ends with its connection.
func TestTableV5CleanStartOutlivesConnection(t *testing.T) {
	tab, rec := readyTable(t)
	apply(t, tab, lineConnect("v5", 5, true))
	apply(t, tab, lineSub("v5", "a/+"))
	apply(t, tab, lineConnect("v311", 4, true))
	apply(t, tab, lineSub("v311", "b"))
	apply(t, tab, lineDisconnect("v5"))
	apply(t, tab, lineDisconnect("v311"))
	wantAdvertised(t, tab, rec, "a/+")
	if st := tab.Stats(); st.Clients != 1 || st.Uncertain != 1 || st.Connected != 0 {
		t.Fatalf("Stats() = %+v", st)
	}
	if !tab.Offline("v5") {
		t.Fatal("the v5 session is not offline")
	}
	apply(t, tab, lineConnect("v5", 5, false)) // resumed: its filters stay
	wantAdvertised(t, tab, rec, "a/+")
	apply(t, tab, lineDisconnect("v5"))
	tab.Reconcile(1) // one subscription: still there
	wantAdvertised(t, tab, rec, "a/+")
	tab.Reconcile(0) // gone
	wantAdvertised(t, tab, rec)

	// The caller knows better: its own connection with session expiry 0.
	ev, err := ParseLine(TopicNotice, lineConnect("v5", 5, true).payload)
	if err != nil {
		t.Fatal(err)
	}
	ev.EndsWithConnection = true
	if err := tab.ApplyParsed(TopicNotice, ev, nil); err != nil {
		t.Fatal(err)
	}
	apply(t, tab, lineDisconnect("v5"))
	if st := tab.Stats(); st.Clients != 0 {
		t.Fatalf("a session that ends with its connection is kept: %+v", st)
	}
}

func TestTableTakeover(t *testing.T) {
	tests := []struct {
		name               string
		oldClean, newClean bool
		want               []string
	}{
		{"clean then persistent", true, false, nil},
		{"clean then clean", true, true, nil},
		{"persistent then persistent", false, false, []string{"f"}},
		{"persistent then clean", false, true, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tab, rec := readyTable(t)
			apply(t, tab, lineConnect("dup id", 4, tc.oldClean))
			apply(t, tab, lineSub("dup id", "f"))
			apply(t, tab, lineTakeover("dup id"))
			apply(t, tab, lineConnect("dup id", 4, tc.newClean))
			wantAdvertised(t, tab, rec, tc.want...)
			if st := tab.Stats(); st.Clients != 1 || st.Connected != 1 {
				t.Fatalf("Stats() = %+v", st)
			}
		})
	}
}

func TestTableExpiry(t *testing.T) {
	tab, rec := readyTable(t)
	apply(t, tab, lineConnect("p 1", 4, false))
	apply(t, tab, lineSub("p 1", "a"))
	apply(t, tab, lineDisconnect("p 1"))
	rec.take()
	apply(t, tab, lineExpire("p 1"))
	wantCalls(t, rec, removed("a"))
	if st := tab.Stats(); st.Clients != 0 || st.Subscriptions != 0 {
		t.Fatalf("Stats() = %+v", st)
	}
	// A subscribe after the expiry names an unknown client.
	if err := lineSub("p 1", "a").applyTo(tab); !errors.Is(err, ErrUnknownClient) {
		t.Fatalf("subscribe after expiry: %v, want ErrUnknownClient", err)
	}
}

func TestTableUnknownClient(t *testing.T) {
	tab, rec := readyTable(t)
	apply(t, tab, lineConnect("c1", 5, true))
	apply(t, tab, lineSub("c1", "a"))
	apply(t, tab, lineSub("c1", "#"))
	rec.take()

	err := lineSub("stranger", "b").applyTo(tab)
	if !errors.Is(err, ErrUnknownClient) {
		t.Fatalf("Apply: %v, want ErrUnknownClient", err)
	}
	// "#" was advertised already: entering degraded only drops the rest.
	wantCalls(t, rec, removed("a"))
	wantAdvertised(t, tab, rec, "#")
	st := tab.Stats()
	if !st.Degraded || st.UnknownClients != 1 || !strings.Contains(st.DegradedReason, "stranger") {
		t.Fatalf("Stats() = %+v", st)
	}
	if err := lineUnsub("stranger", "b").applyTo(tab); !errors.Is(err, ErrUnknownClient) {
		t.Fatalf("unsubscribe: %v, want ErrUnknownClient", err)
	}

	// The broker counts the stranger's subscription: still under-stated.
	tab.Reconcile(3)
	if d, _ := tab.Degraded(); !d {
		t.Fatal("Reconcile(3) with 2 explained cleared the degraded state")
	}
	wantCalls(t, rec)
	tab.Reconcile(2) // the stranger went away
	wantCalls(t, rec, added("a"))
	wantAdvertised(t, tab, rec, "#", "a")
}

func TestTableAmbiguous(t *testing.T) {
	tab, rec := readyTable(t)
	apply(t, tab, lineConnect("a", 5, true))
	apply(t, tab, lineConnect("a 1", 5, true))
	apply(t, tab, lineConnect("a b", 5, true))
	apply(t, tab, lineConnect("id with 1 spaces", 5, true))

	// Unambiguous despite spaces: only one known id leads a valid split.
	apply(t, tab, raw(TopicSubscribe, "id with 1 spaces 1 topic with space/+"))
	apply(t, tab, raw(TopicSubscribe, "a b 0 x y"))
	apply(t, tab, raw(TopicSubscribe, "a 2 z"))
	wantAdvertised(t, tab, rec, "topic with space/+", "x y", "z")
	clients := tab.Clients()
	if !slices.Equal(clients["a b"], []string{"x y"}) || !slices.Equal(clients["a"], []string{"z"}) {
		t.Fatalf("Clients() = %q", clients)
	}
	rec.take()

	// "a 1 1 x" is a subscribing "1 x" or "a 1" subscribing "x".
	err := raw(TopicSubscribe, "a 1 1 x").applyTo(tab)
	if !errors.Is(err, ErrAmbiguousClient) {
		t.Fatalf("Apply: %v, want ErrAmbiguousClient", err)
	}
	wantCalls(t, rec, change{added: []string{"#"}, removed: []string{"topic with space/+", "x y", "z"}})
	if st := tab.Stats(); !st.Degraded || st.AmbiguousClients != 1 {
		t.Fatalf("Stats() = %+v", st)
	}
	// "a b c" is a unsubscribing "b c" or "a b" unsubscribing "c".
	if err := raw(TopicUnsubscribe, "a b c").applyTo(tab); !errors.Is(err, ErrAmbiguousClient) {
		t.Fatalf("unsubscribe: %v, want ErrAmbiguousClient", err)
	}
}

func TestTableMalformed(t *testing.T) {
	tab, rec := readyTable(t)
	apply(t, tab, lineConnect("c1", 5, true))
	apply(t, tab, lineSub("c1", "a"))
	rec.take()

	// A malformed notice costs at worst an over-statement: counted only.
	err := raw(TopicNotice, "New client connected from 1.2.3.4:1 as c2 (p7, c1, k60).").applyTo(tab)
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("Apply: %v, want ErrMalformed", err)
	}
	if d, _ := tab.Degraded(); d {
		t.Fatal("a malformed notice degraded the table")
	}
	// A malformed subscribe line is interest the table cannot place.
	if err := raw(TopicSubscribe, "c1 nofilter").applyTo(tab); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Apply: %v, want ErrMalformed", err)
	}
	wantCalls(t, rec, change{added: []string{"#"}, removed: []string{"a"}})
	if st := tab.Stats(); !st.Degraded || st.ParseErrors != 2 || !strings.Contains(st.DegradedReason, "subscribe") {
		t.Fatalf("Stats() = %+v", st)
	}
	// Ignored lines and foreign topics change nothing.
	apply(t, tab, raw(TopicNotice, "New connection from ::1:5555 on port 1883."))
	apply(t, tab, line{"$SYS/broker/log/W", []byte("garbage")})
	if st := tab.Stats(); st.ParseErrors != 2 {
		t.Fatalf("ParseErrors = %d, want 2", st.ParseErrors)
	}
}

func TestTableSelf(t *testing.T) {
	tab, rec := readyTable(t, "moha-n1", "moha-n1-log")
	apply(t, tab, lineConnect("moha-n1", 5, false))
	apply(t, tab, lineConnect("moha-n1-log", 5, true))
	apply(t, tab, lineSub("moha-n1", "#"))
	apply(t, tab, lineSub("moha-n1-log", "$SYS/broker/log/N"))
	apply(t, tab, lineDisconnect("moha-n1-log"))
	apply(t, tab, lineTakeover("moha-n1"))
	apply(t, tab, lineExpire("moha-n1"))
	wantAdvertised(t, tab, rec)
	if st := tab.Stats(); st.Clients != 0 || st.Degraded {
		t.Fatalf("Stats() = %+v", st)
	}
	// A line that could be the agent's or a client's is not the agent's to ignore.
	apply(t, tab, lineConnect("moha-n1 2", 4, true))
	if err := raw(TopicSubscribe, "moha-n1 2 2 x").applyTo(tab); !errors.Is(err, ErrAmbiguousClient) {
		t.Fatalf("Apply: %v, want ErrAmbiguousClient", err)
	}
}

func TestTableReconcile(t *testing.T) {
	tab, rec := readyTable(t)
	tab.SetOwnSubscriptions(4)
	apply(t, tab, lineConnect("c1", 5, true))
	apply(t, tab, lineConnect("c2", 4, false))
	apply(t, tab, lineSub("c1", "a"))
	apply(t, tab, lineSub("c1", "$share/g/b")) // not in the broker's count
	apply(t, tab, lineSub("c2", "a"))
	apply(t, tab, lineDisconnect("c2")) // offline persistent: still counted
	rec.take()
	const expected = 4 + 2

	tab.Reconcile(expected + 1) // the broker knows more: under-stated
	st := tab.Stats()
	if !st.Degraded || st.BrokerCount != expected+1 || st.Expected != expected || st.OverStated {
		t.Fatalf("Stats() after > = %+v", st)
	}
	wantCalls(t, rec, change{added: []string{"#"}, removed: []string{"$share/g/b", "a"}})

	tab.Reconcile(expected) // complete
	if st := tab.Stats(); st.Degraded || st.OverStated {
		t.Fatalf("Stats() after == = %+v", st)
	}
	wantCalls(t, rec, change{added: []string{"$share/g/b", "a"}, removed: []string{"#"}})

	tab.Reconcile(expected - 1) // over-stated: safe, noted
	if st := tab.Stats(); st.Degraded || !st.OverStated || st.BrokerCount != expected-1 {
		t.Fatalf("Stats() after < = %+v", st)
	}
	wantCalls(t, rec)

	tab.MarkDegraded("log session lost")
	if d, reason := tab.Degraded(); !d || reason != "log session lost" {
		t.Fatalf("Degraded() = %v, %q", d, reason)
	}
	wantCalls(t, rec, change{added: []string{"#"}, removed: []string{"$share/g/b", "a"}})
	tab.Reconcile(expected - 1) // an over-statement proves nothing: still degraded
	wantCalls(t, rec)
	if d, _ := tab.Degraded(); !d {
		t.Fatal("an over-stating count ended a degraded state")
	}
	tab.Reconcile(expected) // the counts match again
	wantCalls(t, rec, change{added: []string{"$share/g/b", "a"}, removed: []string{"#"}})
	wantAdvertised(t, tab, rec, "$share/g/b", "a")
}

func TestTableBridge(t *testing.T) {
	tab, rec := readyTable(t)
	apply(t, tab, raw(TopicNotice, "New bridge connected from [::1]:4000 as br (p2, c0, k60, u'b')."))
	apply(t, tab, lineSub("br", "remote/#"))
	wantAdvertised(t, tab, rec, "remote/#")
}

// TestTableOnChangeMayRead checks the documented contract: onChange runs
// outside the state lock and may read the table.
func TestTableOnChangeMayRead(t *testing.T) {
	var seen [][]string
	var tab *Table
	tab = NewTable(nil, func(added, removed []string) {
		seen = append(seen, tab.Advertised())
		_ = tab.Stats()
	})
	tab.Reconcile(0)
	apply(t, tab, lineConnect("c", 5, true))
	apply(t, tab, lineSub("c", "a"))
	want := [][]string{{}, {"a"}}
	if len(seen) != len(want) || !slices.Equal(seen[0], want[0]) || !slices.Equal(seen[1], want[1]) {
		t.Fatalf("Advertised() seen from onChange = %q, want %q", seen, want)
	}
}

// TestTableConcurrent exercises the locks under -race: one writer, readers.
func TestTableConcurrent(t *testing.T) {
	tab, _ := readyTable(t)
	var wg sync.WaitGroup
	done := make(chan struct{})
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				_ = tab.Advertised()
				_ = tab.Stats()
				_ = tab.Clients()
				_, _ = tab.Degraded()
			}
		}()
	}
	for i := range 500 {
		id := fmt.Sprintf("c%d", i%7)
		apply(t, tab, lineConnect(id, 4, i%2 == 0))
		apply(t, tab, lineSub(id, fmt.Sprintf("f/%d", i%13)))
		if i%50 == 0 {
			tab.Reconcile(i)
		}
	}
	close(done)
	wg.Wait()
}

func BenchmarkApplySubscribe(b *testing.B) {
	const clients, lines = 1000, 1 << 16
	subs := make([]line, lines)
	for i := range lines {
		subs[i] = lineSub(fmt.Sprintf("client %d", i%clients), fmt.Sprintf("sensors/%d/+/temp", i))
	}
	fresh := func() *Table {
		tab := NewTable([]string{"moha-n1"}, func(added, removed []string) {})
		for i := range clients {
			apply(b, tab, lineConnect(fmt.Sprintf("client %d", i), 5, true))
		}
		tab.Reconcile(0)
		return tab
	}
	tab := fresh()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		j := i % lines
		if j == 0 && i > 0 {
			b.StopTimer()
			tab = fresh()
			b.StartTimer()
		}
		if err := subs[j].applyTo(tab); err != nil {
			b.Fatal(err)
		}
	}
}

// TestReconcileClientsForgetsExpiredV5Sessions: offline MQTT v5 sessions
// (c0) may have expired unseen; once the broker's client total shows no
// offline session beyond those the table is sure of, they are forgotten.
func TestReconcileClientsForgetsExpiredV5Sessions(t *testing.T) {
	tab, rec := readyTable(t, "agent-data", "agent-log")
	tab.SetOwnClients(2)
	apply(t, tab, lineConnect("v5", 5, false))
	apply(t, tab, lineSub("v5", "v5/#"))
	apply(t, tab, lineConnect("v311", 4, false))
	apply(t, tab, lineSub("v311", "old/#"))
	apply(t, tab, lineConnect("live", 5, true))
	apply(t, tab, lineSub("live", "live/#"))
	apply(t, tab, lineDisconnect("v5"))
	apply(t, tab, lineDisconnect("v311"))
	wantAdvertised(t, tab, rec, "live/#", "old/#", "v5/#")

	// Broker: 2 own + 1 connected + v311 offline + v5 offline = 5: v5 may still exist.
	if n := tab.ReconcileClients(5); n != 0 {
		t.Fatalf("forgot %d sessions while the broker still holds an unexplained one", n)
	}
	wantAdvertised(t, tab, rec, "live/#", "old/#", "v5/#")
	// Broker: 4 = 2 own + live + v311: the v5 session expired.
	if n := tab.ReconcileClients(4); n != 1 {
		t.Fatalf("forgot %d sessions, want 1", n)
	}
	wantAdvertised(t, tab, rec, "live/#", "old/#")
	if st := tab.Stats(); st.Uncertain != 0 || st.ClientsTotal != 4 {
		t.Fatalf("stats %+v", st)
	}
}

// TestReconcileClientsCountsOwnShareSessions: the agent's share sessions
// come and go; the broker counts them while connected. Counted from their
// connect lines, and dropped at once when the agent closes one, the count
// of own sessions never exceeds the broker's: a session still held is not
// forgotten for a share session the table still counts.
func TestReconcileClientsCountsOwnShareSessions(t *testing.T) {
	tab, rec := readyTable(t, "agent-data", "agent-log", "agent-s0")
	tab.SetOwnClients(2)
	tab.CountOwnConnection("agent-s0")
	for _, id := range []string{"v5", "w5"} {
		apply(t, tab, lineConnect(id, 5, false))
		apply(t, tab, lineSub(id, id+"/#"))
		apply(t, tab, lineDisconnect(id))
	}
	apply(t, tab, lineConnect("agent-s0", 5, true))
	apply(t, tab, lineSub("agent-s0", "$share/g/t"))
	wantAdvertised(t, tab, rec, "v5/#", "w5/#")
	// Broker: 2 own + share + one offline v5 = 4: it may be either.
	if n := tab.ReconcileClients(4); n != 0 {
		t.Fatalf("forgot %d sessions while the broker still holds an unexplained one", n)
	}
	// Broker: 2 own + share = 3: both expired; the share session is counted.
	if n := tab.ReconcileClients(3); n != 2 {
		t.Fatalf("forgot %d sessions with the share session connected, want 2", n)
	}
	wantAdvertised(t, tab, rec)

	apply(t, tab, lineConnect("x5", 5, false))
	apply(t, tab, lineSub("x5", "x5/#"))
	apply(t, tab, lineDisconnect("x5"))
	// The agent lost its share session; the broker's total no longer
	// counts it (2 own + x5 = 3) before its disconnect line arrives.
	// Counted still, it would make x5 look gone.
	tab.OwnConnectionGone("agent-s0")
	if n := tab.ReconcileClients(3); n != 0 {
		t.Fatalf("forgot %d sessions: a share session the broker dropped was still counted", n)
	}
	apply(t, tab, lineDisconnect("agent-s0"))
	if n := tab.ReconcileClients(2); n != 1 {
		t.Fatalf("forgot %d sessions, want 1", n)
	}
	wantAdvertised(t, tab, rec)
}

// TestReconcileForgetsExpiredV5Sessions: the subscription count alone also
// proves uncertain sessions gone when it equals what the certain sessions
// explain; a session with a shared subscription (counted apart) is kept.
func TestReconcileForgetsExpiredV5Sessions(t *testing.T) {
	tab, rec := readyTable(t)
	tab.SetOwnSubscriptions(2)
	for _, id := range []string{"a", "b", "s"} {
		apply(t, tab, lineConnect(id, 5, false))
	}
	apply(t, tab, lineSub("a", "a/1"))
	apply(t, tab, lineSub("a", "a/2"))
	apply(t, tab, lineSub("b", "b/1"))
	apply(t, tab, lineSub("s", "$share/g/s/1"))
	apply(t, tab, lineConnect("live", 4, true))
	apply(t, tab, lineSub("live", "live"))
	for _, id := range []string{"a", "b", "s"} {
		apply(t, tab, lineDisconnect(id))
	}
	tab.Reconcile(2 + 3 + 1) // everything still there
	wantAdvertised(t, tab, rec, "$share/g/s/1", "a/1", "a/2", "b/1", "live")
	tab.Reconcile(2 + 1) // only the certain session's filter: a and b expired
	wantAdvertised(t, tab, rec, "$share/g/s/1", "live")
	if st := tab.Stats(); st.Forgotten != 2 || st.Degraded {
		t.Fatalf("stats %+v", st)
	}
}

// TestSessionLostAfterBrokerRestart: the agent loses its broker session
// and lines were missed. Whether the broker restarted (clean sessions gone,
// persistent ones restored) or not, no count clears the degraded state: a
// filter may have changed unseen. A clean start of each session known
// before re-learns its filters, and then the count may clear it.
func TestSessionLostAfterBrokerRestart(t *testing.T) {
	for _, restarted := range []bool{true, false} {
		tab, rec := readyTable(t)
		tab.SetOwnSubscriptions(2)
		apply(t, tab, lineConnect("clean", 4, true))
		apply(t, tab, lineSub("clean", "c/#"))
		apply(t, tab, lineConnect("pers", 4, false))
		apply(t, tab, lineSub("pers", "p/#"))
		tab.Reconcile(4)
		tab.SessionLost("lost the broker session")
		count := 2 + 2
		if restarted {
			count = 2 + 1 // own + pers's restored subscription
		}
		tab.Reconcile(count)
		wantAdvertised(t, tab, rec, "#")
		if st := tab.Stats(); st.Stale != 2 {
			t.Fatalf("restarted=%v: %d stale sessions, want 2", restarted, st.Stale)
		}
		if restarted {
			apply(t, tab, lineConnect("clean", 4, true)) // back, re-learnt
			apply(t, tab, lineDisconnect("clean"))
		} else {
			apply(t, tab, lineDisconnect("clean"))
		}
		apply(t, tab, lineConnect("pers", 4, true))
		apply(t, tab, lineSub("pers", "p/#"))
		tab.Reconcile(2 + 1)
		wantAdvertised(t, tab, rec, "p/#")
	}
}

// TestSwapWhileLinesMissed (issue 13 §5a): a client swaps filter a for b
// while the log session is down. The counts match, yet b is unknown: the
// table must stay degraded rather than advertise a alone.
func TestSwapWhileLinesMissed(t *testing.T) {
	tab, rec := readyTable(t)
	tab.SetOwnSubscriptions(1)
	apply(t, tab, lineConnect("c", 4, false))
	apply(t, tab, lineSub("c", "a"))
	tab.Reconcile(2)
	wantAdvertised(t, tab, rec, "a")
	tab.SessionLost("log session lost")
	// Unseen: c unsubscribes a and subscribes b.
	tab.Reconcile(2)
	wantAdvertised(t, tab, rec, "#")
}

// TestSuspectsProveNothing (issue 13 §5b): after a broker restart with
// persistence, a clean session connected before (gone now, unlogged) must
// not be counted as connected: the client total would then "prove" a
// restored offline v5 session gone, and the counts would match without it.
func TestSuspectsProveNothing(t *testing.T) {
	tab, rec := readyTable(t)
	tab.SetOwnSubscriptions(2)
	tab.SetOwnClients(2)
	apply(t, tab, lineConnect("clean", 4, true))
	apply(t, tab, lineSub("clean", "c/#"))
	apply(t, tab, lineConnect("v5", 5, false))
	apply(t, tab, lineSub("v5", "v/#"))
	apply(t, tab, lineDisconnect("v5"))
	tab.Reconcile(4)
	tab.SessionLost("lost the broker session")
	// Restarted: clean is gone, v5 restored offline. Total 3: own 2 + v5.
	if n := tab.ReconcileClients(3); n != 0 {
		t.Fatalf("forgot %d sessions on a total that counted a suspect as connected", n)
	}
	tab.Reconcile(2 + 1)
	wantAdvertised(t, tab, rec, "#")
	if !slices.Contains(tab.Clients()["v5"], "v/#") {
		t.Fatal("the restored v5 session's filter was dropped")
	}
}

// TestCountBeforeOwnSubscription (issue 13 §5c): the agent's own
// subscription counts once its line arrives, in order with the counts. A
// count published before the broker applied it must not make an offline
// v5 session look gone.
func TestCountBeforeOwnSubscription(t *testing.T) {
	tab, rec := readyTable(t, "agent-log")
	tab.SetOwnSubscriptions(2)
	tab.TrackOwn("agent-log")
	apply(t, tab, lineConnect("v5", 5, false))
	apply(t, tab, lineSub("v5", "v/#"))
	apply(t, tab, lineDisconnect("v5"))
	tab.Reconcile(2 + 1) // before the probe: own + v5's filter
	apply(t, tab, lineSub("agent-log", "$SYS/moha/probe"))
	tab.Reconcile(2 + 1 + 1) // the probe counted
	apply(t, tab, lineUnsub("agent-log", "$SYS/moha/probe"))
	tab.Reconcile(2 + 1)
	wantAdvertised(t, tab, rec, "v/#")
	tab.Reconcile(2) // now v5 is gone
	wantAdvertised(t, tab, rec)
}

// TestUncertainBlocksStartupProof: at startup sessions the table never saw
// may exist; an equal count proves nothing while an uncertain session
// (offline v5) could be gone in place of one of them. Once it is back
// (certain), the count proves the picture.
func TestUncertainBlocksStartupProof(t *testing.T) {
	tab := NewTable(nil, nil)
	apply(t, tab, lineConnect("v5", 5, false))
	apply(t, tab, lineSub("v5", "v/#"))
	apply(t, tab, lineDisconnect("v5"))
	tab.Reconcile(1)
	if d, _ := tab.Degraded(); !d {
		t.Fatal("an equal count with an uncertain session cleared the startup state")
	}
	apply(t, tab, lineConnect("v5", 5, false))
	tab.Reconcile(1)
	if d, reason := tab.Degraded(); d {
		t.Fatalf("still degraded: %s", reason)
	}
}

// TestCleanStopKeepsThePicture: the broker logs its clean stop and saves
// its database; the log session is suspended and resumes after the
// restart with the lines queued meanwhile: the table knows the restored
// sessions without a missed line. Sessions whose last connect had clean
// start ended (MQTT v5 ones too: Mosquitto 2.0.11 saves none of them);
// persistent ones are offline, an MQTT v5 one uncertain.
func TestCleanStopKeepsThePicture(t *testing.T) {
	tab, rec := readyTable(t)
	tab.SetOwnSubscriptions(2)
	apply(t, tab, lineConnect("clean", 4, true))
	apply(t, tab, lineSub("clean", "c/#"))
	apply(t, tab, lineConnect("pers", 4, false))
	apply(t, tab, lineSub("pers", "p/#"))
	apply(t, tab, lineConnect("v5", 5, false))
	apply(t, tab, lineSub("v5", "v/#"))
	apply(t, tab, lineConnect("v5 clean", 5, true))
	apply(t, tab, lineSub("v5 clean", "w/#"))
	apply(t, tab, raw(TopicInfo, "mosquitto version 2.0.11 terminating"))
	apply(t, tab, raw(TopicInfo, "Saving in-memory database to /var/lib/mosquitto/mosquitto.db."))
	tab.Suspend("log session down")
	wantAdvertised(t, tab, rec, "#")
	st := tab.Stats()
	if st.Clients != 2 || st.Connected != 0 || st.Uncertain != 1 || st.Stale != 0 {
		t.Fatalf("after the clean stop: %+v", st)
	}
	apply(t, tab, lineConnect("pers", 4, false)) // queued while suspended
	tab.Resume()
	wantAdvertised(t, tab, rec, "p/#", "v/#")

	// The same stop whose save failed: the restored sessions are older.
	apply(t, tab, raw(TopicInfo, "mosquitto version 2.0.11 terminating"))
	apply(t, tab, raw(TopicInfo, "Saving in-memory database to /var/lib/mosquitto/mosquitto.db."))
	apply(t, tab, raw(TopicError, "Error saving in-memory database, unable to open /var/lib/mosquitto/mosquitto.db.new for writing."))
	wantAdvertised(t, tab, rec, "#")
	if st := tab.Stats(); st.Stale == 0 {
		t.Fatalf("a failed save left the sessions sure: %+v", st)
	}
}

// TestSuspendResume: a suspension that resumes restores what was before;
// something else degrading the table meanwhile survives the Resume.
func TestSuspendResume(t *testing.T) {
	tab, rec := readyTable(t)
	apply(t, tab, lineConnect("c", 4, true))
	apply(t, tab, lineSub("c", "a"))
	tab.Suspend("down")
	wantAdvertised(t, tab, rec, "#")
	tab.Reconcile(1) // counts do not end a suspension
	wantAdvertised(t, tab, rec, "#")
	tab.Resume()
	wantAdvertised(t, tab, rec, "a")

	tab.Suspend("down")
	if err := lineSub("stranger", "x").applyTo(tab); !errors.Is(err, ErrUnknownClient) {
		t.Fatalf("got %v", err)
	}
	tab.Resume()
	if d, reason := tab.Degraded(); !d || !strings.Contains(reason, "no known client") {
		t.Fatalf("Resume undid another cause: %v %q", d, reason)
	}
}

// TestTrackedOwnSubscriptions: the subscriptions of a tracked own session
// come from its log lines, in order with the counts, never advertised; a
// clean start empties them, and a clean session's end ends them.
func TestTrackedOwnSubscriptions(t *testing.T) {
	tab, rec := readyTable(t, "agent-a", "agent-b", "agent-log")
	tab.SetOwnSubscriptions(1)
	tab.TrackOwn("agent-a")
	tab.TrackOwn("agent-b")
	apply(t, tab, lineConnect("agent-a", 5, true))
	apply(t, tab, lineSub("agent-a", "x/+"))
	apply(t, tab, lineSub("agent-a", "y/1"))
	apply(t, tab, lineSub("agent-a", "y/1")) // a replaced subscription counts once
	apply(t, tab, lineUnsub("agent-a", "x/+"))
	apply(t, tab, lineConnect("agent-b", 5, false))
	apply(t, tab, lineSub("agent-b", "$moha/n/drain"))
	wantAdvertised(t, tab, rec)
	tab.Reconcile(3) // 1 set + y/1 + the drain marker
	if d, reason := tab.Degraded(); d {
		t.Fatalf("degraded: %s", reason)
	}
	tab.Reconcile(4) // agent-b's session holds one the table never saw
	if d, _ := tab.Degraded(); !d {
		t.Fatal("a subscription nobody explains did not degrade the table")
	}
	apply(t, tab, lineDisconnect("agent-b"))
	apply(t, tab, lineConnect("agent-b", 5, true)) // ended: a clean start
	apply(t, tab, lineDisconnect("agent-b"))
	tab.Reconcile(2)
	if d, reason := tab.Degraded(); d {
		t.Fatalf("degraded after the ended session left: %s", reason)
	}
	apply(t, tab, lineDisconnect("agent-a"))
	apply(t, tab, lineConnect("agent-a", 5, true))
	if st := tab.Stats(); st.OwnSubscriptions != 1 {
		t.Errorf("after a clean start own subscriptions = %d, want 1", st.OwnSubscriptions)
	}
	apply(t, tab, lineSub("agent-a", "z/1"))
	tab.Reconcile(2)
	apply(t, tab, lineDisconnect("agent-a")) // a clean session: gone with its connection
	tab.Reconcile(2)                         // so this second subscription is nobody the table knows
	if d, _ := tab.Degraded(); !d {
		t.Fatal("a clean own session's filters still counted after it left")
	}
}
