package render

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/moha-project/moha/internal/testkit"
)

// placementBuckets is how many buckets the client ids are hashed into.
const placementBuckets = 16

// bucketOrder is the order in which the nodes serve bucket b: rendezvous
// hashing, so that a node's death moves only its own buckets, each to the
// next node in that bucket's order — a pure function the agents can compute
// as well as the rendered HAProxy config.
func bucketOrder(b int, nodes []string) []string {
	score := func(n string) uint64 {
		h := sha256.Sum256([]byte(strconv.Itoa(b) + "\x00" + n))
		return binary.BigEndian.Uint64(h[:8])
	}
	order := slices.Clone(nodes)
	slices.SortFunc(order, func(x, y string) int {
		sx, sy := score(x), score(y)
		switch {
		case sx > sy:
			return -1
		case sx < sy:
			return 1
		}
		return strings.Compare(x, y)
	})
	return order
}

// bucketOf is what HAProxy's crc32 converter and mod(placementBuckets)
// compute from a client id (CRC-32 IEEE, as in Ethernet, gzip, PNG).
func bucketOf(clientID string) int {
	return int(crc32.ChecksumIEEE([]byte(clientID)) % placementBuckets)
}

// TestUseServerFailoverOrder is issue 16's placement experiment
// (docs/SESSIONS.md): HAProxy computes each client's bucket from its client
// id with crc32, and per bucket "use-server" rules list the nodes in their
// bucketOrder; a rule whose server is down is skipped. So where a client
// lands — and where it lands once its node is down — is a function the
// agents can compute: the node to hold its session replica.
func TestUseServerFailoverOrder(t *testing.T) {
	haproxy := findBinary(t, "haproxy")
	nodes := []string{"n1", "n2", "n3"}
	servers := map[string]*nameServer{}
	for _, n := range nodes {
		servers[n] = startNameServer(t, n)
	}
	front := testkit.FreePort(t)
	var conf strings.Builder
	fmt.Fprintf(&conf, "global\n    log stdout format raw local0\n\ndefaults\n    mode tcp\n    log global\n    option tcplog\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\n")
	fmt.Fprintf(&conf, "frontend mqtt\n    bind 127.0.0.1:%d\n    tcp-request inspect-delay 5s\n", front)
	fmt.Fprintf(&conf, "    tcp-request content reject unless { req.payload(0,0),mqtt_is_valid }\n")
	fmt.Fprintf(&conf, "    tcp-request content set-var(sess.cid) req.payload(0,0),mqtt_field_value(connect,client_identifier)\n")
	fmt.Fprintf(&conf, "    tcp-request content set-var(sess.bucket) var(sess.cid),crc32,mod(%d)\n    default_backend brokers\n\n", placementBuckets)
	fmt.Fprintf(&conf, "backend brokers\n    balance hash var(sess.cid)\n    hash-type consistent\n")
	for b := range placementBuckets {
		for _, n := range bucketOrder(b, nodes) {
			fmt.Fprintf(&conf, "    use-server %s if { var(sess.bucket) -m int %d }\n", n, b)
		}
	}
	for _, n := range nodes {
		fmt.Fprintf(&conf, "    server %s %s check inter 100ms fall 1 rise 1\n", n, servers[n].addr)
	}
	file := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(file, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(haproxy, "-db", "-f", file)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", front)
	testkit.WaitFor(t, 5*time.Second, "haproxy listening", func() bool {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	ids := make([]string, 200)
	for i := range ids {
		ids[i] = fmt.Sprintf("client-%d-%x", i, i*7919)
	}
	check := func(live []string) {
		t.Helper()
		for _, id := range ids {
			want := ""
			for _, n := range bucketOrder(bucketOf(id), nodes) {
				if slices.Contains(live, n) {
					want = n
					break
				}
			}
			got, err := tryLand(addr, id)
			if err != nil {
				t.Fatalf("connect %s: %v\nhaproxy: %s", id, err, out)
			}
			if got != want {
				t.Fatalf("client %s (bucket %d) landed on %s, want %s (live %v)\nhaproxy: %s", id, bucketOf(id), got, want, live, out)
			}
		}
	}
	check(nodes)
	servers["n2"].close()
	testkit.WaitFor(t, 5*time.Second, "haproxy to mark n2 down", func() bool { return landOnAny(addr, ids, "n2") == false })
	check([]string{"n1", "n3"})
}

func landOnAny(addr string, ids []string, server string) bool {
	for _, id := range ids {
		if name, err := tryLand(addr, id); err != nil || name == server {
			return true
		}
	}
	return false
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
