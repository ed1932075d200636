package interest

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var fuzzTopics = []string{TopicNotice, TopicError, TopicSubscribe, TopicUnsubscribe, "$SYS/broker/log/I"}

// FuzzParseLine: arbitrary lines never panic, errors are ErrMalformed, and
// what parses is consistent with the text it came from.
func FuzzParseLine(f *testing.F) {
	seeds := []struct {
		topic int
		text  string
	}{
		{0, "New client connected from 127.0.0.1:5555 as c1 (p5, c1, k60)."},
		{0, "New client connected from ::1:5555 as id with 1 spaces (p5, c0, k60, u'us er')."},
		{0, "New bridge connected from [::1]:5555 as b (p2, c0, k60)."},
		{0, "New connection from 127.0.0.1:5555 on port 1883."},
		{0, "Client a disconnected. disconnected."},
		{0, "Client a disconnected: b disconnected: Broken pipe."},
		{0, "Bad socket read/write on client a: b: Unknown error."},
		{0, "Expiring client c1 due to timeout."},
		{1, "Client c3 already connected, closing old connection."},
		{2, "id with 1 spaces 1 topic with space/+"},
		{3, "c3 x/#"},
	}
	for _, s := range seeds {
		f.Add(uint8(s.topic), []byte(ts+s.text))
	}
	f.Fuzz(func(t *testing.T, topicIndex uint8, payload []byte) {
		topic := fuzzTopics[int(topicIndex)%len(fuzzTopics)]
		ev, err := ParseLine(topic, payload)
		if err != nil {
			if !errors.Is(err, ErrMalformed) || ev != (Event{}) {
				t.Fatalf("ParseLine(%q) = %+v, %v", payload, ev, err)
			}
			return
		}
		checkParsed(t, topic, string(payload), ev)
	})
}

// checkParsed re-renders the parts of a parsed line and compares them with
// the text: what the parser extracted must be what the line says.
func checkParsed(t *testing.T, topic, payload string, ev Event) {
	t.Helper()
	if ev.Kind == Ignored {
		return
	}
	prefix, text, ok := strings.Cut(payload, ": ")
	if n, err := strconv.ParseInt(prefix, 10, 64); !ok || err != nil || n != ev.Time {
		t.Fatalf("timestamp %d is not the prefix of %q", ev.Time, payload)
	}
	switch ev.Kind {
	case Connected:
		plain, withUser := connectTails(ev)
		if ev.ClientID == "" || (!strings.HasSuffix(text, " as "+ev.ClientID+plain) &&
			!strings.HasSuffix(text, " as "+ev.ClientID+withUser)) {
			t.Fatalf("%q parsed as %+v", payload, ev)
		}
	case Disconnected, Takeover, Expired:
		if ev.ClientID == "" || !strings.Contains(text, " "+ev.ClientID) {
			t.Fatalf("%q parsed as %+v", payload, ev)
		}
	case Subscribed, Unsubscribed:
		if ev.Rest != text || (topic == TopicSubscribe) != (ev.Kind == Subscribed) {
			t.Fatalf("%q on %s parsed as %+v", payload, topic, ev)
		}
	default:
		t.Fatalf("%q parsed as unknown kind %+v", payload, ev)
	}
}

// connectTails renders the two possible ends of a connect line (without
// and with a username) from a parsed event.
func connectTails(ev Event) (plain, withUser string) {
	p := map[int]int{3: 1, 4: 2, 5: 5}[ev.Protocol]
	c := 0
	if ev.Clean {
		c = 1
	}
	flags := fmt.Sprintf(" (p%d, c%d, k%d", p, c, ev.KeepAlive)
	return flags + ").", flags + ", u'" + ev.Username + "')."
}

// FuzzLineRoundTrip renders lines the way Mosquitto does from arbitrary ids,
// usernames and filters, and checks they parse (and resolve) back.
func FuzzLineRoundTrip(f *testing.F) {
	f.Add("c1", "", uint8(5), true, uint16(60), "a/b", uint8(1))
	f.Add("id with 1 spaces", "us er", uint8(1), false, uint16(0), "topic with space/+", uint8(0))
	f.Add("x (p1, c0, k5) y", "a (p2, c0, k1, u'b')", uint8(2), false, uint16(65535), "$share/g/a b", uint8(2))
	f.Add("a disconnected: b", "'", uint8(5), true, uint16(1), "1 x", uint8(2))
	f.Fuzz(func(t *testing.T, id, user string, p uint8, clean bool, keepAlive uint16, filter string, qos uint8) {
		if id == "" || filter == "" {
			return
		}
		protocol := []int{3, 4, 5}[int(p)%3]
		want := Event{Kind: Connected, Time: 1700000000, ClientID: id, Protocol: protocol, Clean: clean, KeepAlive: int(keepAlive), Username: user}
		connect := renderConnect(want, user != "" || p >= 128)
		want.From = "::1:5555" // renderConnect's address
		if len(connect.payload) >= maxLogPayload {
			return
		}
		got, err := ParseLine(connect.topic, connect.payload)
		// With a username the id and the username could both hold the
		// flags' text; the parser then favours the shorter id.
		ambiguous := user != "" && strings.Contains(id, " (p")
		if err != nil || (!ambiguous && got != want) {
			t.Fatalf("connect %q: got %+v, %v; want %+v", connect.payload, got, err, want)
		}
		for _, l := range disconnectLines(id) {
			if len(l.payload) >= maxLogPayload {
				continue
			}
			ev, err := ParseLine(l.topic, l.payload)
			if err != nil || ev.ClientID != id || ev.Kind == Ignored || ev.Kind == Connected {
				t.Fatalf("%q: got %+v, %v; want id %q", l.payload, ev, err, id)
			}
		}
		checkSubscribeRoundTrip(t, id, filter, qos%3)
	})
}

// renderConnect renders a connect line; withUser forces the u'...' form.
func renderConnect(ev Event, withUser bool) line {
	p := map[int]int{3: 1, 4: 2, 5: 5}[ev.Protocol]
	c := 0
	if ev.Clean {
		c = 1
	}
	text := fmt.Sprintf("New client connected from ::1:5555 as %s (p%d, c%d, k%d", ev.ClientID, p, c, ev.KeepAlive)
	if withUser {
		return raw(TopicNotice, text+", u'"+ev.Username+"').")
	}
	return raw(TopicNotice, text+").")
}

func disconnectLines(id string) []line {
	var out []line
	for _, suffix := range disconnectSuffixes {
		out = append(out, raw(TopicNotice, "Client "+id+suffix))
	}
	return append(out,
		raw(TopicNotice, "Client "+id+" disconnected: Connection reset by peer."),
		raw(TopicNotice, "Bad socket read/write on client "+id+": Unknown error."),
		raw(TopicNotice, "Expiring client "+id+" due to timeout."),
		raw(TopicError, "Client "+id+" already connected, closing old connection."),
	)
}

// checkSubscribeRoundTrip: with one known id, a subscribe line resolves to
// exactly that id and filter, and the unsubscribe line removes it.
func checkSubscribeRoundTrip(t *testing.T, id, filter string, qos uint8) {
	tab, _ := readyTable(t)
	connect := raw(TopicNotice, "New client connected from 1.2.3.4:1 as "+id+" (p5, c1, k60).")
	sub := raw(TopicSubscribe, fmt.Sprintf("%s %d %s", id, qos, filter))
	unsub := raw(TopicUnsubscribe, id+" "+filter)
	if len(connect.payload) >= maxLogPayload || len(sub.payload) >= maxLogPayload {
		return
	}
	for _, l := range []line{connect, sub} {
		if err := l.applyTo(tab); err != nil {
			t.Fatalf("%q: %v", l.payload, err)
		}
	}
	if got := tab.Clients()[id]; !slices.Equal(got, []string{filter}) {
		t.Fatalf("Clients()[%q] = %q, want [%q]", id, got, filter)
	}
	if err := unsub.applyTo(tab); err != nil {
		t.Fatalf("%q: %v", unsub.payload, err)
	}
	if got := tab.Clients()[id]; len(got) != 0 {
		t.Fatalf("after unsubscribe Clients()[%q] = %q", id, got)
	}
}

// Alphabets for FuzzTableApply, chosen to collide: ids that prefix each
// other with spaces, filters with spaces and digits, a self id.
var (
	fuzzIDs     = []string{"a", "a 1", "a b", "b", "moha", "x disconnected.", "1"}
	fuzzFilters = []string{"x", "1 x", "b c", "$share/g/x", "#", "$share/h/y", "y", "+/x", "$share/g"}
)

// FuzzTableApply runs random operation sequences and checks the invariants
// after each: Advertised is {"#"} while degraded and otherwise the union of
// every session's filters; onChange diffs add up to Advertised; the
// incremental counters match a recount.
func FuzzTableApply(f *testing.F) {
	f.Add([]byte{0, 0, 1, 4, 0, 0, 1, 8, 3})
	f.Add([]byte{0, 1, 0, 0, 2, 1, 4, 1, 1, 4, 2, 2, 8, 2, 1, 1, 2, 3})
	f.Add([]byte{0, 5, 0, 4, 4, 0, 6, 'g', 'a', 'r', 9, 10, 3, 8, 6})
	f.Fuzz(func(t *testing.T, data []byte) {
		rec := newRecorder(t)
		tab := NewTable([]string{"moha"}, rec.onChange)
		in := &byteReader{data: data}
		for !in.done() {
			fuzzOp(tab, in)
			checkInvariants(t, tab, rec)
		}
	})
}

type byteReader struct {
	data []byte
	pos  int
}

func (r *byteReader) done() bool { return r.pos >= len(r.data) }

func (r *byteReader) next() int {
	if r.done() {
		return 0
	}
	r.pos++
	return int(r.data[r.pos-1])
}

func (r *byteReader) pick(from []string) string { return from[r.next()%len(from)] }

func (r *byteReader) bytes() []byte {
	n := r.next() % 16
	end := min(r.pos+n, len(r.data))
	b := r.data[r.pos:end]
	r.pos = end
	return b
}

func fuzzOp(tab *Table, in *byteReader) {
	switch in.next() % 11 {
	case 0:
		id := in.pick(fuzzIDs)
		b := in.next()
		_ = lineConnect(id, []int{3, 4, 5}[b%3], b&4 != 0).applyTo(tab)
	case 1:
		id := in.pick(fuzzIDs)
		_ = disconnectLines(id)[in.next()%len(disconnectSuffixes)].applyTo(tab)
	case 2:
		_ = lineTakeover(in.pick(fuzzIDs)).applyTo(tab)
	case 3:
		_ = lineExpire(in.pick(fuzzIDs)).applyTo(tab)
	case 4:
		id, filter := in.pick(fuzzIDs), in.pick(fuzzFilters)
		_ = raw(TopicSubscribe, fmt.Sprintf("%s %d %s", id, in.next()%3, filter)).applyTo(tab)
	case 5:
		_ = lineUnsub(in.pick(fuzzIDs), in.pick(fuzzFilters)).applyTo(tab)
	case 6:
		_ = tab.Apply(in.pick(fuzzTopics), in.bytes())
	case 7:
		_ = raw(in.pick(fuzzTopics), string(in.bytes())).applyTo(tab)
	case 8:
		tab.Reconcile(in.next() % 12)
	case 9:
		tab.MarkDegraded("fuzz")
	case 10:
		tab.SetOwnSubscriptions(in.next() % 4)
	}
}

func checkInvariants(t *testing.T, tab *Table, rec *recorder) {
	t.Helper()
	adv := tab.Advertised()
	degraded, _ := tab.Degraded()
	clients := tab.Clients()
	union := map[string]bool{}
	subscriptions, nonShared := 0, 0
	for _, filters := range clients {
		for _, f := range filters {
			union[f] = true // shared subscriptions are advertised whole
			subscriptions++
			if !isShared(f) {
				nonShared++
			}
		}
	}
	want := slices.Sorted(maps.Keys(union))
	if degraded {
		want = []string{everything}
	}
	if !slices.Equal(adv, want) {
		t.Fatalf("Advertised() = %q, want %q (degraded %v, clients %q)", adv, want, degraded, clients)
	}
	if got := rec.set(); !slices.Equal(got, adv) {
		t.Fatalf("onChange implies %q, Advertised() = %q", got, adv)
	}
	if _, ok := clients["moha"]; ok {
		t.Fatalf("self id in Clients(): %q", clients)
	}
	st := tab.Stats()
	if st.Subscriptions != subscriptions || tab.nonShared != nonShared || st.Filters != len(union) || st.Clients != len(clients) {
		t.Fatalf("Stats() = %+v, nonShared %d; recount: subscriptions %d, non-shared %d, filters %d, clients %d",
			st, tab.nonShared, subscriptions, nonShared, len(union), len(clients))
	}
	for f, n := range tab.refs {
		if n <= 0 || !union[f] {
			t.Fatalf("refs[%q] = %d, union %v", f, n, union)
		}
	}
}
