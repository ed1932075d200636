package session

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moha-project/moha/internal/message"
)

// broker is a real mosquitto process started for one test.
type broker struct {
	addr   string
	cmd    *exec.Cmd
	log    *syncBuffer
	exited chan struct{}
}

// syncBuffer collects the broker's log for failing tests.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startBroker runs mosquitto on a free 127.0.0.1 port with the test
// configuration plus extra lines, and kills it when the test ends.
func startBroker(t testing.TB, extra ...string) *broker {
	t.Helper()
	var lastErr error
	for range 5 { // the free port may be taken between probe and bind
		b, err := tryStartBroker(t, extra)
		if err == nil {
			return b
		}
		lastErr = err
	}
	t.Fatalf("start mosquitto: %v", lastErr)
	return nil
}

func tryStartBroker(t testing.TB, extra []string) (*broker, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	lines := []string{
		fmt.Sprintf("listener %d 127.0.0.1", port),
		"max_queued_messages 100000",
		"persistence false",
		"log_dest stderr",
	}
	if os.Geteuid() == 0 {
		lines = append(lines, "user root") // else mosquitto drops to a user that cannot read t.TempDir()
	}
	if !strings.Contains(strings.Join(extra, "\n"), "allow_anonymous") {
		lines = append(lines, "allow_anonymous true")
	}
	lines = append(lines, extra...)
	conf := filepath.Join(t.TempDir(), "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return nil, err
	}
	b := &broker{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), log: &syncBuffer{}, exited: make(chan struct{})}
	b.cmd = exec.Command("mosquitto", "-c", conf)
	b.cmd.Stdout, b.cmd.Stderr = b.log, b.log
	if err := b.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { b.cmd.Wait(); close(b.exited) }()
	if err := b.awaitListening(5 * time.Second); err != nil {
		b.kill()
		return nil, fmt.Errorf("%w\n%s", err, b.log.String())
	}
	t.Cleanup(func() {
		b.kill()
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", b.log.String())
		}
	})
	return b, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (b *broker) awaitListening(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-b.exited:
			return fmt.Errorf("mosquitto exited")
		default:
		}
		if c, err := net.DialTimeout("tcp", b.addr, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond) // polling for the listener; no event to await
	}
	return fmt.Errorf("mosquitto not listening on %s after %v", b.addr, timeout)
}

// kill ends the broker at once (SIGKILL) and waits for it.
func (b *broker) kill() {
	b.cmd.Process.Kill()
	<-b.exited
}

// pause stops the broker (SIGSTOP): connections stay open, nothing is answered.
func (b *broker) pause(t testing.TB) {
	t.Helper()
	if err := b.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("pause mosquitto: %v", err)
	}
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

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
