package session

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/moha-project/moha/internal/message"
	"github.com/moha-project/moha/internal/testkit"
)

// broker is a real mosquitto process started for one test.
type broker = testkit.Broker

// startBroker runs mosquitto on a free 127.0.0.1 port with the test
// configuration plus extra lines, and kills it when the test ends.
func startBroker(t testing.TB, extra ...string) *broker {
	t.Helper()
	return testkit.StartBroker(t, extra...)
}

var waitFor = testkit.WaitFor

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// dial connects a session for the test and closes it at the end.
func dial(t testing.TB, addr, clientID string, h Handler, opts ...func(*Config)) *Session {
	t.Helper()
	cfg := Config{Addr: addr, ClientID: clientID, CleanStart: true, Logger: testLogger(t)}
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := Dial(ctx, cfg, h)
	if err != nil {
		t.Fatalf("dial %s: %v", clientID, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func subscribe(t testing.TB, s *Session, subs ...Subscription) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Subscribe(ctx, subs...); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
}

// dataSub is the agent's data subscription.
func dataSub(filter string, qos byte) Subscription {
	return Subscription{Filter: filter, QoS: qos, NoLocal: true, RetainAsPublished: true, RetainHandling: 2}
}

// inbox collects deliveries, acknowledging them at once when autoAck is set.
type inbox struct {
	mu      sync.Mutex
	ds      []*Delivery
	autoAck bool
}

func (in *inbox) handle(d *Delivery) {
	in.mu.Lock()
	in.ds = append(in.ds, d)
	in.mu.Unlock()
	if in.autoAck {
		d.Ack()
	}
}

func (in *inbox) all() []*Delivery {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]*Delivery(nil), in.ds...)
}

func (in *inbox) len() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.ds)
}

// completion records how often and with what a done callback was called.
type completion struct {
	mu    sync.Mutex
	calls int
	err   error
}

func (c *completion) done(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	c.err = err
}

func (c *completion) get() (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls, c.err
}

// publishAndWait publishes m and waits for its completion.
func publishAndWait(t testing.TB, s *Session, m message.Message) error {
	t.Helper()
	ch := make(chan error, 1)
	s.Publish(m, func(err error) { ch <- err })
	select {
	case err := <-ch:
		return err
	case <-time.After(5 * time.Second):
		t.Fatalf("publish %s: no completion", m.Topic)
		return nil
	}
}
