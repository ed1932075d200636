// Package testkit holds what the tests of several packages share: a private
// mosquitto broker per test, polling with a deadline, and a log buffer safe
// for a writer and a reader. Only tests import it.
package testkit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moha-project/moha/internal/config"
	"github.com/moha-project/moha/internal/freeport"
	"github.com/moha-project/moha/internal/plainbroker"
	"github.com/moha-project/moha/internal/poll"
)

// Broker is a real mosquitto process started for one test.
type Broker struct {
	Addr   string // 127.0.0.1:<port>
	cmd    *exec.Cmd
	log    *SyncBuffer
	exited chan struct{}
}

// StartBroker runs mosquitto on a free 127.0.0.1 port with the plain
// broker's config (internal/plainbroker: anonymous access unless extra says
// otherwise, no persistence, a deep queue) plus the extra lines. The broker
// is killed when the test ends, and its log is printed if the test failed.
func StartBroker(t testing.TB, extra ...string) *Broker {
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

func tryStartBroker(t testing.TB, extra []string) (*Broker, error) {
	port, err := freeport.Port("127.0.0.1")
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	conf, err := writeConfig(t.TempDir(), addr, extra)
	if err != nil {
		return nil, err
	}
	b := &Broker{Addr: addr, log: &SyncBuffer{}, exited: make(chan struct{})}
	b.cmd = exec.Command("mosquitto", "-c", conf)
	b.cmd.Stdout, b.cmd.Stderr = b.log, b.log
	if err := b.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = b.cmd.Wait(); close(b.exited) }()
	if err := b.awaitListening(5 * time.Second); err != nil {
		b.Kill()
		return nil, fmt.Errorf("%w\n%s", err, b.log.String())
	}
	t.Cleanup(func() {
		b.Kill()
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", b.log.String())
		}
	})
	return b, nil
}

// writeConfig writes dir/mosquitto.conf for a test broker on addr and
// returns its path.
func writeConfig(dir, addr string, extra []string) (string, error) {
	text, err := plainbroker.Config(plainbroker.Options{
		Addr:      addr,
		User:      plainbroker.RunAs(),
		MaxQueued: config.Default().MaxQueuedMessages,
		Extra:     extra,
	})
	if err != nil {
		return "", err
	}
	conf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return "", fmt.Errorf("write mosquitto config: %w", err)
	}
	return conf, nil
}

func (b *Broker) awaitListening(timeout time.Duration) error {
	// Polling for the listener: no event announces it.
	err := poll.Until(context.Background(), timeout, 20*time.Millisecond, func() (bool, error) {
		select {
		case <-b.exited:
			return false, errors.New("mosquitto exited")
		default:
		}
		c, err := net.DialTimeout("tcp", b.Addr, 200*time.Millisecond)
		if err != nil {
			return false, nil
		}
		_ = c.Close()
		return true, nil
	})
	if errors.Is(err, poll.ErrTimeout) {
		return fmt.Errorf("mosquitto not listening on %s after %v", b.Addr, timeout)
	}
	return err
}

// Kill ends the broker at once (SIGKILL) and waits for it.
func (b *Broker) Kill() {
	_ = b.cmd.Process.Kill()
	<-b.exited
}

// Pause stops the broker (SIGSTOP): connections stay open, nothing is answered.
func (b *Broker) Pause(t testing.TB) {
	t.Helper()
	if err := b.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("pause mosquitto: %v", err)
	}
}

// Log returns what the broker has logged so far.
func (b *Broker) Log() string { return b.log.String() }

// Pid returns the broker's process id (for CPU and memory figures).
func (b *Broker) Pid() int { return b.cmd.Process.Pid }

// FreePort asks the OS for a 127.0.0.1 port nobody uses right now, and
// fails the test if it cannot.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := freeport.Port("127.0.0.1")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	return port
}

// WaitFor polls cond until it holds, and fails the test if timeout passes
// first. For conditions no event announces.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	err := poll.Until(context.Background(), timeout, 5*time.Millisecond, func() (bool, error) {
		return cond(), nil
	})
	if err != nil {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// SyncBuffer is a bytes.Buffer safe for one writer and readers at once
// (a process's output read while it runs).
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
