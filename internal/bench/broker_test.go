package bench

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

const mosquittoBinary = "/usr/sbin/mosquitto"

// startMosquitto starts a private broker on a free port and returns its
// address; the broker is killed when the test ends.
func startMosquitto(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(mosquittoBinary); err != nil {
		t.Skipf("mosquitto not installed: %v", err)
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		addr, err := tryStartMosquitto(t)
		if err == nil {
			return addr
		}
		lastErr = err // most likely the port was taken between probe and bind
	}
	t.Fatalf("start mosquitto: %v", lastErr)
	return ""
}

func tryStartMosquitto(t testing.TB) (string, error) {
	port := freePort(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	body := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\nmax_queued_messages 100000\n", port)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatalf("write mosquitto config: %v", err)
	}
	var stderr syncBuffer
	cmd := exec.Command(mosquittoBinary, "-c", conf)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("run mosquitto: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return "", fmt.Errorf("mosquitto exited: %s", stderr.String())
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			_ = c.Close()
			t.Cleanup(stop)
			return addr, nil
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronization
	}
	stop()
	return "", fmt.Errorf("mosquitto did not listen on %s: %s", addr, stderr.String())
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
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
