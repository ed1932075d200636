package interest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moha-project/moha/internal/testkit"
)

// The session rules the Table applies are the broker's. TestRealBroker runs
// a scenario against a real mosquitto 2.0.11, captures the log lines the
// way the agent receives them, replays them into a Table and checks that
// the table explains exactly the broker's own subscription count.

const (
	topicSubCount = "$SYS/broker/subscriptions/count"
	liveLogger    = "moha-log" // the capturing session: the table's self id
	liveOwnSubs   = 5          // its non-shared subscriptions: LogFilters and the count
)

func TestRealBroker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real mosquitto")
	}
	for _, bin := range []string{"mosquitto", "mosquitto_sub"} {
		if _, err := exec.LookPath(bin); err != nil {
			if _, err := os.Stat("/usr/sbin/" + bin); err != nil {
				testkit.SkipUnavailable(t, "%s not installed", bin)
			}
		}
	}
	addr := startBroker(t)
	capture := startCapture(t, addr)
	waitFor(t, 5*time.Second, func() bool {
		return strings.Contains(readFile(t, capture), liveLogger+" 0 "+topicSubCount)
	})

	// A v5 persistent session with spaces, a username and a shared filter.
	mosquittoSub(t, addr, "-V", "mqttv5", "-i", "id with 1 spaces", "-c", "-x", "3600", "-u", "us er",
		"-t", "topic with space/+", "-t", "$share/g/a b", "-E")
	// A clean session: gone at disconnect.
	c2 := dialMQTT(t, addr, "c2", true)
	c2.subscribe(t, "x")
	c2.disconnect(t)
	// A persistent session that inherits, unlogged, what it had.
	c3 := dialMQTT(t, addr, "c3", false)
	c3.subscribe(t, "p/#")
	c3.disconnect(t)
	c3 = dialMQTT(t, addr, "c3", false)
	c3.subscribe(t, "q")
	c3.unsubscribe(t, "p/#")
	c3.unsubscribe(t, "never")
	c3.disconnect(t)
	// Takeovers: persistent then persistent keeps t1; clean then
	// persistent loses u1.
	for _, tk := range []struct {
		id             string
		oldClean       bool
		oldSub, newSub string
	}{{"tk 1", false, "t1", "t2"}, {"tk 2", true, "u1", "u2"}} {
		old := dialMQTT(t, addr, tk.id, tk.oldClean)
		old.subscribe(t, tk.oldSub)
		taker := dialMQTT(t, addr, tk.id, false)
		taker.subscribe(t, tk.newSub)
		taker.disconnect(t)
		_ = old.conn.Close()
	}
	dialMQTT(t, addr, "done", true).disconnect(t)

	want := []string{"$share/g/a b", "q", "t1", "t2", "topic with space/+", "u2"}
	const wantCount = liveOwnSubs + 5
	var tab *Table
	ok := pollFor(10*time.Second, func() bool {
		text := readFile(t, capture)
		if !strings.Contains(text, "Client done disconnected.") {
			return false
		}
		tab = replay(t, text)
		st := tab.Stats()
		return st.BrokerCount == st.Expected && st.BrokerCount == wantCount
	})
	if !ok {
		t.Fatalf("the table never explained the broker's count %d: stats %+v\nclients %q\ncapture:\n%s",
			wantCount, tab.Stats(), tab.Clients(), readFile(t, capture))
	}
	// The v5 session is offline with an expiry the log does not show: it
	// may be gone in place of a session that existed before the table
	// started, so the equal count proves nothing yet. Back online, it does.
	if d, _ := tab.Degraded(); !d {
		t.Fatal("an equal count cleared the startup state while an offline v5 session was uncertain")
	}
	if err := tab.Apply(TopicNotice, []byte("1: New client connected from 127.0.0.1:1 as id with 1 spaces (p5, c0, k60).")); err != nil {
		t.Fatal(err)
	}
	tab.Reconcile(wantCount)
	if d, reason := tab.Degraded(); d {
		t.Fatalf("degraded: %s", reason)
	}
	if got := tab.Advertised(); !slices.Equal(got, want) {
		t.Fatalf("Advertised() = %q, want %q\ncapture:\n%s", got, want, readFile(t, capture))
	}
	if got := tab.Clients()["tk 1"]; !slices.Equal(got, []string{"t1", "t2"}) {
		t.Fatalf(`Clients()["tk 1"] = %q`, got)
	}
}

// replay feeds captured "topic payload" lines to a new Table.
func replay(t *testing.T, capture string) *Table {
	t.Helper()
	tab := NewTable([]string{liveLogger}, nil)
	tab.SetOwnSubscriptions(liveOwnSubs)
	for _, l := range strings.Split(strings.TrimSuffix(capture, "\n"), "\n") {
		topic, payload, _ := strings.Cut(l, " ")
		if topic == topicSubCount {
			n, err := strconv.Atoi(payload)
			if err != nil {
				t.Fatalf("count %q: %v", payload, err)
			}
			tab.Reconcile(n)
			continue
		}
		if err := tab.Apply(topic, []byte(payload)); err != nil {
			t.Fatalf("Apply(%q): %v", l, err)
		}
	}
	return tab
}

func startBroker(t *testing.T) string {
	t.Helper()
	port := testkit.FreePort(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	config := fmt.Sprintf(`listener %d 127.0.0.1
allow_anonymous true
persistence false
sys_interval 1
log_dest topic
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
log_type subscribe
log_type unsubscribe
`, port)
	if err := os.WriteFile(conf, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	stderr, err := os.Create(filepath.Join(dir, "mosquitto.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stderr.Close() })
	cmd := exec.Command(brokerBinary("mosquitto"), "-c", conf)
	cmd.Stderr = stderr
	startProcess(t, cmd)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	waitFor(t, 5*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return addr
}

// startCapture runs mosquitto_sub as the agent's log session would
// subscribe, writing "topic payload" lines to a file it returns.
func startCapture(t *testing.T, addr string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "capture.txt")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close() })
	host, port, _ := net.SplitHostPort(addr)
	args := []string{"-h", host, "-p", port, "-i", liveLogger, "-v", "-V", "mqttv5"}
	for _, f := range append(LogFilters(), topicSubCount) {
		args = append(args, "-t", f)
	}
	cmd := exec.Command(brokerBinary("mosquitto_sub"), args...)
	cmd.Stdout = out
	startProcess(t, cmd)
	return path
}

// mosquittoSub runs one mosquitto_sub to completion (use -E).
func mosquittoSub(t *testing.T, addr string, args ...string) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(brokerBinary("mosquitto_sub"), append([]string{"-h", host, "-p", port}, args...)...)
	done := make(chan error, 1)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("mosquitto_sub %q: %v: %s", args, err, out.String())
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("mosquitto_sub %q did not finish", args)
	}
}

func startProcess(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
}

func brokerBinary(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return "/usr/sbin/" + name
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t testing.TB, timeout time.Duration, cond func() bool) {
	t.Helper()
	if !pollFor(timeout, cond) {
		t.Fatalf("condition not met within %v", timeout)
	}
}

func pollFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mqttConn is a minimal MQTT 3.1.1 client: unlike mosquitto_sub it does not
// reconnect when a takeover closes it. Every call waits for the broker's
// acknowledgement, so the log line is written when it returns.
type mqttConn struct {
	conn net.Conn
	r    *bufio.Reader
	id   uint16
}

func dialMQTT(t *testing.T, addr, clientID string, clean bool) *mqttConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &mqttConn{conn: conn, r: bufio.NewReader(conn)}
	var flags byte
	if clean {
		flags = 0x02
	}
	body := append(mqttString("MQTT"), 4, flags, 0, 60) // level 4, keep alive 60 s
	body = append(body, mqttString(clientID)...)
	c.send(t, 0x10, body)
	if typ, ack := c.read(t); typ != 0x20 || len(ack) != 2 || ack[1] != 0 {
		t.Fatalf("CONNECT %q: got packet %#x %v", clientID, typ, ack)
	}
	return c
}

func (c *mqttConn) subscribe(t *testing.T, filter string) {
	t.Helper()
	c.id++
	body := binary.BigEndian.AppendUint16(nil, c.id)
	body = append(append(body, mqttString(filter)...), 1)
	c.send(t, 0x82, body)
	if typ, ack := c.read(t); typ != 0x90 || len(ack) != 3 || ack[2] > 2 {
		t.Fatalf("SUBSCRIBE %q: got packet %#x %v", filter, typ, ack)
	}
}

func (c *mqttConn) unsubscribe(t *testing.T, filter string) {
	t.Helper()
	c.id++
	body := append(binary.BigEndian.AppendUint16(nil, c.id), mqttString(filter)...)
	c.send(t, 0xa2, body)
	if typ, _ := c.read(t); typ != 0xb0 {
		t.Fatalf("UNSUBSCRIBE %q: got packet %#x", filter, typ)
	}
}

// disconnect sends DISCONNECT and waits for the broker to close the socket,
// after which its disconnect line is logged.
func (c *mqttConn) disconnect(t *testing.T) {
	t.Helper()
	c.send(t, 0xe0, nil)
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, c.r); err != nil {
		t.Fatalf("waiting for the broker to close: %v", err)
	}
	c.conn.Close()
}

func (c *mqttConn) send(t *testing.T, header byte, body []byte) {
	t.Helper()
	packet := []byte{header}
	for n := len(body); ; {
		b := byte(n % 128)
		if n /= 128; n > 0 {
			b |= 0x80
		}
		packet = append(packet, b)
		if n == 0 {
			break
		}
	}
	_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.conn.Write(append(packet, body...)); err != nil {
		t.Fatal(err)
	}
}

func (c *mqttConn) read(t *testing.T) (byte, []byte) {
	t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	header, err := c.r.ReadByte()
	if err != nil {
		t.Fatal(err)
	}
	n, err := binary.ReadUvarint(c.r) // MQTT's remaining length is this varint
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		t.Fatal(err)
	}
	return header & 0xf0, body
}

func mqttString(s string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(s))), s...)
}
