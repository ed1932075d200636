package mesh

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/moha-project/moha/internal/message"
)

func handshakePair(dialSecret, acceptSecret []byte) (dialErr, acceptErr error, dialed, accepted hello) {
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	c1.SetDeadline(time.Now().Add(5 * time.Second))
	c2.SetDeadline(time.Now().Add(5 * time.Second))
	dialer := &handshaker{node: "a", epoch: 1, secret: dialSecret}
	acceptor := &handshaker{node: "b", epoch: 2, secret: acceptSecret, known: func(n string) bool { return n == "a" }}
	done := make(chan struct{})
	go func() {
		defer close(done)
		accepted, acceptErr = acceptor.accept(c2, bufio.NewReader(c2))
		c2.Close()
	}()
	dialed, dialErr = dialer.dial(c1, bufio.NewReader(c1), "b")
	c1.Close()
	<-done
	return
}

func TestHandshake(t *testing.T) {
	dErr, aErr, dialed, accepted := handshakePair(testSecret, testSecret)
	if dErr != nil || aErr != nil {
		t.Fatalf("good handshake failed: dial %v, accept %v", dErr, aErr)
	}
	if dialed.node != "b" || dialed.epoch != 2 || accepted.node != "a" || accepted.epoch != 1 {
		t.Errorf("hellos: dialer saw %+v, acceptor saw %+v", dialed, accepted)
	}

	dErr, aErr, _, _ = handshakePair(testSecret, []byte("another-secret-of-16+"))
	if rejectReason(dErr) != reasonBadMAC || !errors.Is(dErr, ErrAuth) {
		t.Errorf("dialer with the wrong secret: %v (reason %s), want bad_mac", dErr, rejectReason(dErr))
	}
	if aErr == nil {
		t.Error("acceptor authenticated a dialer with the wrong secret")
	}
}

// helloBytes builds a dialer HELLO with the given fields.
func helloBytes(magic string, version uint64, node string) []byte {
	body := []byte(magic)
	body = binary.AppendUvarint(body, version)
	body = appendString(body, node)
	body = binary.BigEndian.AppendUint64(body, 9)
	body = append(body, make([]byte, nonceSize)...)
	return appendFrame(nil, frameHello, body)
}

// TestMeshRefusesBadConnections: garbage, wrong versions, unknown names,
// bad macs and silence are refused and counted, nothing from them is
// delivered, and the mesh then still accepts a real peer.
func TestMeshRefusesBadConnections(t *testing.T) {
	rec := newRecorder()
	aAddr := closedAddr(t)
	b := startMesh(t, testConfig(t, "b", map[string]string{"a": aAddr, "c": closedAddr(t)}), rec.handlers(),
		func(m *Mesh) { m.handshakeTimeout = 300 * time.Millisecond })

	publish := appendFrame(nil, framePublishBatch, encodeFrameBody(nil, &frame{
		typ: framePublishBatch, firstSeq: 1, msgs: []message.Message{{Topic: "evil", Payload: []byte("x")}}}))
	snapshot := appendFrame(nil, frameSnapshot, encodeFrameBody(nil, &frame{typ: frameSnapshot, version: 1, filters: []string{"#"}}))

	cases := []struct {
		name, reason string
		data         []byte
		afterHello   func(conn net.Conn, br *bufio.Reader) // runs after reading the mesh's HELLO
	}{
		{name: "http garbage", reason: reasonGarbage,
			data: []byte("GET / HTTP/1.1\r\nHost: example\r\n" + strings.Repeat("X-Pad: y\r\n", 10) + "\r\n")},
		{name: "oversized length", reason: reasonGarbage, data: []byte{0xff, 0xff, 0xff, 0x7f}},
		{name: "bad magic", reason: reasonBadMagic, data: helloBytes("MQTT", 1, "a")},
		{name: "wrong version", reason: reasonBadVersion, data: helloBytes(protocolMagic, protocolVersion+1, "a")},
		{name: "unknown node", reason: reasonUnknownNode, data: helloBytes(protocolMagic, protocolVersion, "mallory")},
		{name: "higher name dials", reason: reasonUnknownNode, data: helloBytes(protocolMagic, protocolVersion, "c")},
		{name: "own name", reason: reasonUnknownNode, data: helloBytes(protocolMagic, protocolVersion, "b")},
		{name: "silence", reason: reasonTimeout},
		{name: "publish instead of auth", reason: reasonGarbage, data: helloBytes(protocolMagic, protocolVersion, "a"),
			afterHello: func(conn net.Conn, _ *bufio.Reader) { conn.Write(append(publish, snapshot...)) }},
		{name: "bad mac then frames", reason: reasonBadMAC, data: helloBytes(protocolMagic, protocolVersion, "a"),
			afterHello: func(conn net.Conn, _ *bufio.Reader) {
				auth := appendFrame(nil, frameAuth, make([]byte, macSize))
				conn.Write(append(append(auth, publish...), snapshot...))
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := metric(t, b.reg, "moha_link_rejected_total", map[string]string{"reason": tc.reason})
			conn, err := net.Dial("tcp", b.addr())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.Write(tc.data)
			if tc.afterHello != nil {
				br := bufio.NewReader(conn)
				conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := readHello(br, true); err != nil {
					t.Fatalf("reading the mesh's hello: %v", err)
				}
				tc.afterHello(conn, br)
			}
			expectClosed(t, conn)
			waitFor(t, 5*time.Second, "rejection counted as "+tc.reason, func() bool {
				return metric(t, b.reg, "moha_link_rejected_total", map[string]string{"reason": tc.reason}) == before+1
			})
		})
	}
	if n := rec.total(); n != 0 {
		t.Fatalf("an unauthenticated peer got %d messages/interest events delivered", n)
	}
	if b.up("a") {
		t.Fatal("link to a is up after only bad connections")
	}

	// The mesh still serves: the real a links up.
	a := startMesh(t, testConfig(t, "a", map[string]string{"b": b.addr()}), newRecorder().handlers())
	waitFor(t, 5*time.Second, "a-b link up", func() bool { return a.up("b") && b.up("a") })
}

func TestWrongSecretRefusedOnBothSides(t *testing.T) {
	b := startMesh(t, testConfig(t, "b", map[string]string{"a": closedAddr(t)}), newRecorder().handlers())
	cfg := testConfig(t, "a", map[string]string{"b": b.addr()})
	cfg.Secret = []byte("a-different-cluster-secret")
	a := startMesh(t, cfg, newRecorder().handlers())

	waitFor(t, 5*time.Second, "both sides count a rejection", func() bool {
		return metric(t, a.reg, "moha_link_rejected_total", map[string]string{"reason": reasonBadMAC}) >= 1 &&
			metricSum(t, b.reg, "moha_link_rejected_total") >= 1
	})
	if a.up("b") || b.up("a") {
		t.Fatal("link came up with different secrets")
	}
	if n := metricSum(t, a.reg, "moha_link_connects_total") + metricSum(t, b.reg, "moha_link_connects_total"); n != 0 {
		t.Fatalf("%v connects counted with different secrets", n)
	}
}

// fakeConn feeds fixed bytes to a handshake and swallows its writes.
type fakeConn struct {
	r io.Reader
}

func (c *fakeConn) Read(b []byte) (int, error)  { return c.r.Read(b) }
func (c *fakeConn) Write(b []byte) (int, error) { return len(b), nil }

// FuzzHandshake: random bytes from a fake dialer never panic the acceptor
// and never authenticate; the same for a fake acceptor against the dialer.
func FuzzHandshake(f *testing.F) {
	valid := helloBytes(protocolMagic, protocolVersion, "a")
	f.Add(valid)
	f.Add(append(valid, appendFrame(nil, frameAuth, make([]byte, macSize))...))
	f.Add(helloBytes(protocolMagic, protocolVersion+1, "a"))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		acceptor := &handshaker{node: "b", epoch: 2, secret: testSecret, known: func(n string) bool { return n == "a" }}
		c := &fakeConn{r: bytes.NewReader(data)}
		if h, err := acceptor.accept(c, bufio.NewReader(c)); err == nil {
			t.Fatalf("random bytes authenticated as %q", h.node)
		}
		dialer := &handshaker{node: "a", epoch: 1, secret: testSecret}
		c = &fakeConn{r: bytes.NewReader(data)}
		if h, err := dialer.dial(c, bufio.NewReader(c), "b"); err == nil {
			t.Fatalf("random bytes authenticated as acceptor %q", h.node)
		}
	})
}
