package session

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moha-project/moha/internal/message"
)

func TestRoundTripQoSAndNoLocal(t *testing.T) {
	b := startBroker(t)
	subBox, pubBox := &inbox{autoAck: true}, &inbox{autoAck: true}
	sub := dial(t, b.Addr, "sub", subBox.handle)
	pub := dial(t, b.Addr, "pub", pubBox.handle)
	subscribe(t, sub, dataSub("#", 2))
	subscribe(t, pub, dataSub("#", 2)) // No Local: must never see its own publishes

	for qos := byte(0); qos <= 2; qos++ {
		m := message.Message{Topic: fmt.Sprintf("rt/q%d", qos), Payload: []byte{'p', '0' + qos}, QoS: qos}
		if err := publishAndWait(t, pub, m); err != nil {
			t.Fatalf("publish qos %d: %v", qos, err)
		}
	}
	waitFor(t, 5*time.Second, "3 deliveries", func() bool { return subBox.len() == 3 })
	got := subBox.all()
	// QoS 2 is released to subscribers on PUBREL, so arrival order across QoS levels may differ.
	slices.SortFunc(got, func(a, b *Delivery) int { return strings.Compare(a.Message.Topic, b.Message.Topic) })
	for i, d := range got {
		want := message.Message{Topic: fmt.Sprintf("rt/q%d", i), Payload: []byte{'p', '0' + byte(i)}, QoS: byte(i)}
		if !reflect.DeepEqual(d.Message, want) {
			t.Errorf("delivery %d = %+v, want %+v", i, d.Message, want)
		}
	}

	// The broker queued any copy of pub's own messages before it acknowledged
	// them, so once sub's later marker reaches pub, nothing else may have.
	if err := publishAndWait(t, sub, message.Message{Topic: "rt/marker", QoS: 1}); err != nil {
		t.Fatalf("publish marker: %v", err)
	}
	waitFor(t, 5*time.Second, "marker at pub", func() bool { return pubBox.len() > 0 })
	for _, d := range pubBox.all() {
		if d.Message.Topic != "rt/marker" {
			t.Errorf("No Local: pub received its own %s", d.Message.Topic)
		}
	}
	if st := pub.Stats(); st.PublishesSent != 3 || st.PublishesAcked != 2 || st.InFlight != 0 || st.Queued != 0 {
		t.Errorf("pub stats = %+v", st)
	}
	if st := sub.Stats(); st.DeliveriesReceived != 3 || st.AcksSent != 2 {
		t.Errorf("sub stats = %+v", st)
	}
}

func TestInvalidMessageRefusedLocally(t *testing.T) {
	b := startBroker(t)
	s := dial(t, b.Addr, "pub", nil)
	bad := []message.Message{
		{Topic: "", QoS: 1},
		{Topic: "a/+", QoS: 1},
		{Topic: "a/#", QoS: 0},
		{Topic: "a\x00b", QoS: 1},
		{Topic: "bad\xffutf8", QoS: 1},
		{Topic: "a", QoS: 3},
		{Topic: "a", QoS: 1, Props: message.Properties{ContentType: strings.Repeat("x", 70000)}},
	}
	for _, m := range bad {
		if err := publishAndWait(t, s, m); !errors.Is(err, errInvalidMessage) {
			t.Errorf("publish %q: err = %v, want errInvalidMessage", m.Topic, err)
		}
	}
	// The connection survived: a valid message still goes through.
	if err := publishAndWait(t, s, message.Message{Topic: "ok", QoS: 1}); err != nil {
		t.Fatalf("publish after refused ones: %v", err)
	}
}

func TestPropertiesRoundTrip(t *testing.T) {
	b := startBroker(t)
	box := &inbox{autoAck: true}
	sub := dial(t, b.Addr, "sub", box.handle)
	pub := dial(t, b.Addr, "pub", nil)
	subscribe(t, sub, dataSub("#", 2))
	pf, expiry := byte(1), uint32(3600)
	sent := message.Message{
		Topic:   "props/a",
		Payload: []byte("héllo"),
		QoS:     1,
		Props: message.Properties{
			PayloadFormat:   &pf,
			MessageExpiry:   &expiry,
			ContentType:     "text/plain; charset=utf-8",
			ResponseTopic:   "reply/to/me",
			CorrelationData: []byte{0, 1, 2, 0xff},
			User: []message.UserProperty{
				{Key: "k", Value: "1"}, {Key: "other", Value: "x y"}, {Key: "k", Value: "2"},
			},
		},
	}
	if err := publishAndWait(t, pub, sent); err != nil {
		t.Fatalf("publish: %v", err)
	}
	waitFor(t, 5*time.Second, "delivery", func() bool { return box.len() == 1 })
	got := box.all()[0].Message
	if got.Props.MessageExpiry == nil || *got.Props.MessageExpiry > expiry || *got.Props.MessageExpiry < expiry-5 {
		t.Errorf("message expiry = %v, want about %d", got.Props.MessageExpiry, expiry)
	}
	got.Props.MessageExpiry = &expiry // counted down by the broker; checked above
	if !reflect.DeepEqual(got, sent) {
		t.Errorf("received %+v\nwant     %+v", got, sent)
	}
}

func TestQoS2BackToBackRespectsReceiveMaximum(t *testing.T) {
	b := startBroker(t)
	box := &inbox{autoAck: true}
	sub := dial(t, b.Addr, "sub", box.handle)
	pub := dial(t, b.Addr, "pub", nil)
	subscribe(t, sub, dataSub("#", 2))
	if got := pub.ServerReceiveMaximum(); got != 20 {
		t.Fatalf("ServerReceiveMaximum = %d, want mosquitto's default 20", got)
	}
	const n = 200
	done := make([]completion, n)
	for i := range n {
		pub.Publish(message.Message{Topic: "q2/x", Payload: fmt.Appendf(nil, "%d", i), QoS: 2}, done[i].done)
	}
	if st := pub.Stats(); st.InFlight > 20 {
		t.Errorf("in flight %d > receive maximum 20", st.InFlight)
	}
	waitFor(t, 10*time.Second, "all completions", func() bool {
		for i := range done {
			if calls, _ := done[i].get(); calls == 0 {
				return false
			}
		}
		return true
	})
	for i := range done {
		if calls, err := done[i].get(); calls != 1 || err != nil {
			t.Errorf("message %d: done called %d times, err %v", i, calls, err)
		}
	}
	waitFor(t, 10*time.Second, "all deliveries", func() bool { return box.len() == n })
	for i, d := range box.all() {
		if want := fmt.Sprint(i); string(d.Message.Payload) != want || d.Message.QoS != 2 {
			t.Fatalf("delivery %d: payload %q qos %d, want %q qos 2", i, d.Message.Payload, d.Message.QoS, want)
		}
	}
}

func TestAcksReleasedInArrivalOrder(t *testing.T) {
	b := startBroker(t)
	persistent := func(c *Config) { c.SessionExpiry = 300 }
	box := &inbox{} // acked by hand below
	sub := dial(t, b.Addr, "acker", box.handle, persistent)
	subscribe(t, sub, Subscription{Filter: "ack/#", QoS: 1})
	pub := dial(t, b.Addr, "pub", nil)
	for i := range 10 {
		pub.Publish(message.Message{Topic: "ack/t", Payload: fmt.Appendf(nil, "m%d", i), QoS: 1}, nil)
	}
	waitFor(t, 5*time.Second, "10 deliveries", func() bool { return box.len() == 10 })
	ds := box.all()
	for i := 9; i >= 5; i-- { // later half, in reverse: each must wait for m0..m4
		ds[i].Ack()
	}
	for i := 2; i >= 0; i-- { // m2, m1, m0: acknowledging m0 releases m0..m2
		ds[i].Ack()
		ds[i].Ack() // a second call is a no-op
	}
	waitFor(t, 5*time.Second, "3 acks written", func() bool { return sub.Stats().AcksSent >= 3 })
	if got := sub.Stats().AcksSent; got != 3 {
		t.Fatalf("acks sent = %d, want 3 (m3, m4 unacknowledged hold back m5..m9)", got)
	}
	if err := sub.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	// The broker still holds m3..m9 for the persistent session and resends them.
	again := &inbox{autoAck: true}
	sub2 := dial(t, b.Addr, "acker", again.handle, persistent, func(c *Config) { c.CleanStart = false })
	if !sub2.SessionPresent() {
		t.Fatal("session not present after reconnect")
	}
	if err := publishAndWait(t, pub, message.Message{Topic: "ack/t", Payload: []byte("marker"), QoS: 1}); err != nil {
		t.Fatalf("publish marker: %v", err)
	}
	want := []string{"m3", "m4", "m5", "m6", "m7", "m8", "m9", "marker"}
	waitFor(t, 5*time.Second, "redeliveries and marker", func() bool { return again.len() >= len(want) })
	var got []string
	for _, d := range again.all() {
		got = append(got, string(d.Message.Payload))
	}
	// Once in many CI runs the broker also resent m2, whose PUBACK was the
	// last packet before DISCONNECT (cause not established; at-least-once
	// allows a redelivery). What must hold: m0 and m1 are not resent, and
	// every unacknowledged message is, in order.
	if len(got) > 0 && got[0] == "m2" {
		t.Logf("broker also resent m2 (acknowledged just before DISCONNECT)")
		got = got[1:]
	}
	if !slices.Equal(got, want) {
		t.Errorf("after reconnect got %v, want %v", got, want)
	}
}

func TestRetainAsPublishedAndRetainHandling(t *testing.T) {
	b := startBroker(t)
	pub := dial(t, b.Addr, "pub", nil)
	if err := publishAndWait(t, pub, message.Message{Topic: "ret/old", Payload: []byte("old"), QoS: 1, Retain: true}); err != nil {
		t.Fatalf("publish retained: %v", err)
	}
	box := &inbox{autoAck: true}
	sub := dial(t, b.Addr, "sub", box.handle)
	subscribe(t, sub, dataSub("ret/#", 1)) // Retain Handling 2: ret/old is not replayed
	for _, m := range []message.Message{
		{Topic: "ret/new", Payload: []byte("new"), QoS: 1, Retain: true},
		{Topic: "ret/plain", Payload: []byte("plain"), QoS: 1},
	} {
		if err := publishAndWait(t, pub, m); err != nil {
			t.Fatalf("publish %s: %v", m.Topic, err)
		}
	}
	waitFor(t, 5*time.Second, "2 deliveries", func() bool { return box.len() >= 2 })
	ds := box.all()
	if len(ds) != 2 || ds[0].Message.Topic != "ret/new" || !ds[0].Message.Retain ||
		ds[1].Message.Topic != "ret/plain" || ds[1].Message.Retain {
		for _, d := range ds {
			t.Logf("got %s retain=%v", d.Message.Topic, d.Message.Retain)
		}
		t.Fatal("want ret/new retained then ret/plain not retained, and no replay of ret/old")
	}
}

func TestRefusedConnect(t *testing.T) {
	pwfile := filepath.Join(t.TempDir(), "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-c", "-b", pwfile, "agent", "secret").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v: %s", err, out)
	}
	b := startBroker(t, "allow_anonymous false", "password_file "+pwfile)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cfg := Config{Addr: b.Addr, ClientID: "c", CleanStart: true, Username: "agent", Password: "wrong", Logger: testLogger(t)}
	s, err := Dial(ctx, cfg, nil)
	var refused *RefusedError
	if !errors.As(err, &refused) || refused.Code < 0x80 {
		if s != nil {
			s.Close()
		}
		t.Fatalf("dial with wrong password: err = %v, want RefusedError", err)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("(0x%02x)", refused.Code)) {
		t.Errorf("error %q does not name the code", err)
	}
	cfg.Password = "secret"
	s, err = Dial(ctx, cfg, nil)
	if err != nil {
		t.Fatalf("dial with the right password: %v", err)
	}
	s.Close()
}

func TestCloseTwiceAndAfterClose(t *testing.T) {
	b := startBroker(t)
	s := dial(t, b.Addr, "c", nil)
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	select {
	case <-s.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
	if err := s.Err(); err != nil {
		t.Errorf("Err after clean close = %v", err)
	}
	var c completion
	s.Publish(message.Message{Topic: "a", QoS: 1}, c.done)
	if calls, err := c.get(); calls != 1 || !errors.Is(err, ErrClosed) {
		t.Errorf("publish after close: %d calls, err %v", calls, err)
	}
	if err := s.Subscribe(context.Background(), Subscription{Filter: "a"}); !errors.Is(err, ErrClosed) {
		t.Errorf("subscribe after close: %v", err)
	}
}

func TestCloseFailsQueuedWithErrClosed(t *testing.T) {
	b := startBroker(t)
	s := dial(t, b.Addr, "c", nil)
	b.Pause(t) // nothing is acknowledged any more
	const n = 30
	done := make([]completion, n)
	for i := range n {
		s.Publish(message.Message{Topic: "a", QoS: 1}, done[i].done)
	}
	waitFor(t, 5*time.Second, "window full", func() bool { return s.Stats().InFlight == 20 })
	s.Close()
	for i := range done {
		if calls, err := done[i].get(); calls != 1 || !errors.Is(err, ErrClosed) {
			t.Errorf("message %d: %d calls, err %v", i, calls, err)
		}
	}
}

func TestBrokerKilled(t *testing.T) {
	b := startBroker(t)
	s := dial(t, b.Addr, "c", nil)
	b.Pause(t)
	const n = 50
	done := make([]completion, n)
	for i := range n {
		s.Publish(message.Message{Topic: "a", Payload: []byte("x"), QoS: 1}, done[i].done)
	}
	waitFor(t, 5*time.Second, "20 in flight, 30 queued", func() bool {
		st := s.Stats()
		return st.InFlight == 20 && st.Queued == 30
	})
	b.Kill()
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after the broker died")
	}
	if err := s.Err(); err == nil || errors.Is(err, ErrClosed) {
		t.Errorf("Err = %v, want the connection error", err)
	}
	for i := range done {
		calls, err := done[i].get()
		if calls != 1 || err == nil || errors.Is(err, ErrClosed) {
			t.Errorf("message %d: %d calls, err %v", i, calls, err)
		}
	}
}

// TestAckAfterEndIsNoop acks a delivery of a session that ended.
func TestAckAfterEndIsNoop(t *testing.T) {
	b := startBroker(t)
	box := &inbox{}
	sub := dial(t, b.Addr, "sub", box.handle)
	subscribe(t, sub, dataSub("#", 1))
	pub := dial(t, b.Addr, "pub", nil)
	if err := publishAndWait(t, pub, message.Message{Topic: "x", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "delivery", func() bool { return box.len() == 1 })
	sub.Close()
	box.all()[0].Ack()
	if got := sub.Stats().AcksSent; got != 0 {
		t.Errorf("acks sent after close = %d", got)
	}
}

func TestUnsubscribe(t *testing.T) {
	b := startBroker(t)
	box := &inbox{autoAck: true}
	sub := dial(t, b.Addr, "sub", box.handle)
	subscribe(t, sub, dataSub("gone/#", 1), dataSub("kept/#", 1))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := sub.Unsubscribe(ctx, "gone/#"); err != nil {
		t.Fatalf("unsubscribe: %v", err)
	}
	pub := dial(t, b.Addr, "pub", nil)
	for _, topic := range []string{"gone/x", "kept/x"} {
		if err := publishAndWait(t, pub, message.Message{Topic: topic, QoS: 1}); err != nil {
			t.Fatalf("publish %s: %v", topic, err)
		}
	}
	waitFor(t, 5*time.Second, "kept/x", func() bool { return box.len() > 0 })
	if ds := box.all(); len(ds) != 1 || ds[0].Message.Topic != "kept/x" {
		t.Errorf("got %d deliveries, first %q; want only kept/x", len(ds), ds[0].Message.Topic)
	}
	if err := sub.Subscribe(ctx, Subscription{Filter: "a", QoS: 3}); !errors.Is(err, errInvalidSubscription) {
		t.Errorf("subscribe with qos 3: %v", err)
	}
}

// Mosquitto sends one copy per matching subscription, each with the
// identifier of its own subscription (what the agent's data session relies
// on to keep one copy of each message).
func TestSubscriptionIdentifiers(t *testing.T) {
	b := startBroker(t)
	box := &inbox{autoAck: true}
	sub := dial(t, b.Addr, "sub", box.handle)
	pub := dial(t, b.Addr, "pub", nil)
	first, second := dataSub("ids/+", 1), dataSub("ids/a", 1)
	first.ID, second.ID = 7, 268_435_455
	subscribe(t, sub, first)
	subscribe(t, sub, second)
	if err := publishAndWait(t, pub, message.Message{Topic: "ids/a", Payload: []byte("x"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "2 copies", func() bool { return box.len() == 2 })
	var ids []uint32
	for _, d := range box.all() {
		ids = append(ids, d.SubID)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []uint32{7, 268_435_455}) {
		t.Errorf("copies carry ids %v, want [7 268435455]", ids)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	mixed := dataSub("ids/b", 1)
	if err := sub.Subscribe(ctx, first, mixed); err == nil {
		t.Error("subscribe with two identifiers in one SUBSCRIBE: no error")
	}
	mixed.ID = 268_435_456
	if err := sub.Subscribe(ctx, mixed); err == nil {
		t.Error("subscribe with identifier over the maximum: no error")
	}
}
