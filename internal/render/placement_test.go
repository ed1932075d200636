package render

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/moha-project/moha/internal/config"
	"github.com/moha-project/moha/internal/placement"
	"github.com/moha-project/moha/internal/testkit"
)

// TestHAProxyPlacement is issue 16's placement experiment
// (docs/SESSIONS.md), on the rendered config: HAProxy computes each
// client's bucket from its client id (crc32) and the per-bucket use-server
// rules list the nodes in placement.Order; a rule whose server is down is
// skipped. So every client lands on placement.Serving's first node, also
// once its node is down: a function the agents compute, and so where a
// session replica must live. The backends here answer their node's name;
// each node's /readyz is a small HTTP server the test can stop.
func TestHAProxyPlacement(t *testing.T) {
	haproxy := findBinary(t, "haproxy")
	c := config.Default()
	c.Secret = "0123456789abcdef0123"
	c.LoadBalancers.CheckInterval = config.Duration(100 * time.Millisecond)
	c.LoadBalancers.MaxConn = 1000 // HAProxy needs two descriptors per connection
	ready := map[string]*httptest.Server{}
	var names []string
	for _, name := range []string{"n1", "n2", "n3"} {
		backend := startNameServer(t, name)
		ready[name] = httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		t.Cleanup(ready[name].Close)
		httpAddr := strings.TrimPrefix(ready[name].URL, "http://")
		cluster := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)) // never listened on: HAProxy does not use it
		c.Nodes = append(c.Nodes, config.Node{Name: name, Broker: config.Broker{Address: backend.addr}, HTTP: httpAddr, Link: cluster, DataDir: "/tmp/" + name})
		names = append(names, name)
	}
	c.ApplyDefaults()
	addr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	conf, err := HAProxy(&c, HAProxyOptions{Bind: addr})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(haproxy, "-db", "-f", file)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	ids := make([]string, 200)
	for i := range ids {
		ids[i] = fmt.Sprintf("client-%d-%x", i, i*7919)
	}
	lands := func(live []string) func() bool {
		return func() bool {
			for _, id := range ids {
				want := placement.Serving(id, names, func(n string) bool { return slices.Contains(live, n) }, 1)[0]
				if got, err := tryLand(addr, id); err != nil || got != want {
					return false
				}
			}
			return true
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("haproxy: %s", out)
		}
	})
	testkit.WaitFor(t, 5*time.Second, "every client on the first node of its bucket's order", lands(names))
	ready["n2"].Close() // n2's agent stops answering /readyz
	testkit.WaitFor(t, 5*time.Second, "n2's clients on the next node of their orders", lands([]string{"n1", "n3"}))
}

func tryLand(addr, id string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	cp := packets.NewControlPacket(packets.CONNECT)
	c := cp.Content.(*packets.Connect)
	c.ProtocolName, c.ProtocolVersion, c.ClientID, c.CleanStart, c.KeepAlive = "MQTT", 5, id, true, 30
	if _, err := cp.WriteTo(conn); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSpace(line), err
}

// nameServer is a TCP server that answers every connection with its name.
type nameServer struct {
	addr string
	ln   net.Listener
}

func startNameServer(t *testing.T, name string) *nameServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &nameServer{addr: ln.Addr().String(), ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				var buf [1]byte
				if _, err := c.Read(buf[:]); err != nil { // the client's CONNECT arrived
					return
				}
				_, _ = c.Write([]byte(name + "\n"))
				_, _ = c.Read(buf[:]) // until the client closes
			}()
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *nameServer) close() { _ = s.ln.Close() }
