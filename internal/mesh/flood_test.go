package mesh

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingHandler counts the log records at Warn and above.
type countingHandler struct{ n *atomic.Int64 }

func (h countingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h countingHandler) Handle(context.Context, slog.Record) error    { h.n.Add(1); return nil }
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h countingHandler) WithGroup(string) slog.Handler                { return h }

// TestHandshakeFloodDoesNotStarvePeers (issue 15 §4): 1000 idle and 1000
// garbage connections a second against a node while its peer starts: the
// peer links within 2 s, and the node writes a few log lines, not one per
// connection.
func TestHandshakeFloodDoesNotStarvePeers(t *testing.T) {
	var warnings atomic.Int64
	cb := testConfig(t, "b", map[string]string{"a": closedAddr(t)})
	cb.Logger = slog.New(countingHandler{&warnings})
	b := startMesh(t, cb, newRecorder().handlers())

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var idle []net.Conn
	var mu sync.Mutex
	defer func() {
		stop()
		wg.Wait()
		for _, c := range idle {
			c.Close()
		}
	}()
	flood := func(garbage bool) {
		tick := time.NewTicker(time.Millisecond) // 1000 a second
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			c, err := net.DialTimeout("tcp", b.addr(), time.Second)
			if err != nil {
				continue
			}
			if garbage {
				_, _ = c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
				c.Close()
				continue
			}
			mu.Lock()
			idle = append(idle, c)
			mu.Unlock()
		}
	}
	wg.Go(func() { flood(false) })
	wg.Go(func() { flood(true) })
	waitFor(t, 5*time.Second, "the flood under way", func() bool { return metricSum(t, b.reg, "moha_link_rejected_total") >= 200 })

	start := time.Now()
	a := startMesh(t, testConfig(t, "a", map[string]string{"b": b.addr()}), newRecorder().handlers())
	waitFor(t, 10*time.Second, "a and b linked during the flood", func() bool { return a.up("b") && b.up("a") })
	linked := time.Since(start)
	time.Sleep(time.Second) // the flood goes on for a second after the link: its duration, not a synchronisation
	stop()
	wg.Wait()
	rejected := metricSum(t, b.reg, "moha_link_rejected_total")
	t.Logf("linked after %v; %v connections rejected, %d warnings logged", linked.Round(time.Millisecond), rejected, warnings.Load())
	if linked > 2*time.Second {
		t.Fatalf("the peer linked only after %v of the flood", linked)
	}
	if rejected < 500 {
		t.Fatalf("only %v connections rejected: the flood did not reach the node", rejected)
	}
	if w := warnings.Load(); w > 20 {
		t.Fatalf("%d warnings logged in about 2 s of flood: one per connection", w)
	}
}
