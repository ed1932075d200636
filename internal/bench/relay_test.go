package bench

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/moha-project/moha/internal/testkit"
)

func newTestRelay(t *testing.T, target string) *Relay {
	t.Helper()
	r, err := NewRelay("127.0.0.1:0", target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func (r *Relay) activeConns() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns)
}

// countingConn counts what the test itself sent and received, to compare
// with the relay's counts.
type countingConn struct {
	net.Conn
	written, read int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written += int64(n)
	return n, err
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read += int64(n)
	return n, err
}

func (c *countingConn) send(t *testing.T, cp *packets.ControlPacket) {
	t.Helper()
	if _, err := cp.WriteTo(c); err != nil {
		t.Fatalf("write %s: %v", cp.PacketType(), err)
	}
}

func (c *countingConn) receive(t *testing.T, want byte) *packets.ControlPacket {
	t.Helper()
	cp, err := packets.ReadPacket(c)
	if err != nil {
		t.Fatalf("read packet (want type %d): %v", want, err)
	}
	if cp.Type != want {
		t.Fatalf("got packet %s, want type %d", cp.PacketType(), want)
	}
	return cp
}

// A full MQTT exchange through the relay: it must count exactly the bytes
// the client wrote and the bytes the broker sent back.
func TestRelayCountsMQTTExchangeExactly(t *testing.T) {
	r := newTestRelay(t, startMosquitto(t))
	raw, err := net.DialTimeout("tcp", r.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	c := &countingConn{Conn: raw}

	connect := packets.NewControlPacket(packets.CONNECT)
	*connect.Content.(*packets.Connect) = packets.Connect{ProtocolName: "MQTT", ProtocolVersion: 5,
		ClientID: "relay-test", CleanStart: true, KeepAlive: 60, Properties: &packets.Properties{}}
	c.send(t, connect)
	c.receive(t, packets.CONNACK)

	sub := packets.NewControlPacket(packets.SUBSCRIBE)
	*sub.Content.(*packets.Subscribe) = packets.Subscribe{PacketID: 1, Properties: &packets.Properties{},
		Subscriptions: []packets.SubOptions{{Topic: "relay/t", QoS: 1}}}
	c.send(t, sub)
	c.receive(t, packets.SUBACK)

	pub := packets.NewControlPacket(packets.PUBLISH)
	*pub.Content.(*packets.Publish) = packets.Publish{PacketID: 2, QoS: 1, Topic: "relay/t",
		Payload: bytes.Repeat([]byte("x"), 100), Properties: &packets.Properties{}}
	c.send(t, pub)
	var inboundID uint16
	for range 2 { // our PUBACK and our message coming back, in either order
		cp, err := packets.ReadPacket(c)
		if err != nil {
			t.Fatal(err)
		}
		if p, ok := cp.Content.(*packets.Publish); ok {
			inboundID = p.PacketID
		}
	}
	if inboundID == 0 {
		t.Fatal("the message did not come back")
	}
	ack := packets.NewControlPacket(packets.PUBACK)
	*ack.Content.(*packets.Puback) = packets.Puback{PacketID: inboundID, Properties: &packets.Properties{}}
	c.send(t, ack)
	c.send(t, packets.NewControlPacket(packets.DISCONNECT))
	if _, err := io.Copy(io.Discard, c); err != nil { // the broker closes after DISCONNECT
		t.Fatalf("read to EOF: %v", err)
	}
	_ = raw.Close() // the relay passes the broker's close on as a half-close; this ends the other half

	waitFor(t, 5*time.Second, "relay to finish the connection", func() bool { return r.activeConns() == 0 })
	to, from := r.Bytes()
	if to != c.written || from != c.read {
		t.Fatalf("relay counted %d to / %d from the broker; client wrote %d and read %d", to, from, c.written, c.read)
	}
	if c.written < 100 || c.read < 100 { // both carried a 100-byte payload plus framing
		t.Fatalf("implausible exchange: wrote %d, read %d", c.written, c.read)
	}
}

// startTCPServer runs handle for each connection until the test ends.
func startTCPServer(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { defer c.Close(); handle(c) })
		}
	})
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// echo copies everything back, then closes its side.
func echo(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.Copy(c, c)
}

func TestRelayPassesHalfClose(t *testing.T) {
	target := startTCPServer(t, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		n, _ := io.Copy(io.Discard, c) // until the client's half-close arrives
		fmt.Fprintf(c, "got %d", n)
	})
	r := newTestRelay(t, target)
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	reply, err := io.ReadAll(c)
	if err != nil || string(reply) != "got 1000" {
		t.Fatalf("reply %q, %v; want \"got 1000\"", reply, err)
	}
	waitFor(t, 5*time.Second, "relay to finish", func() bool { return r.activeConns() == 0 })
	if to, from := r.Bytes(); to != 1000 || from != int64(len(reply)) {
		t.Fatalf("counted %d/%d, want 1000/%d", to, from, len(reply))
	}
}

func TestRelayManyConnections(t *testing.T) {
	r := newTestRelay(t, startTCPServer(t, echo))
	const conns, size = 20, 10_000
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := range conns {
		wg.Go(func() { errs <- echoThrough(r.Addr(), bytes.Repeat([]byte{byte(i)}, size)) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "relay to finish", func() bool { return r.activeConns() == 0 })
	if to, from := r.Bytes(); to != conns*size || from != conns*size {
		t.Fatalf("counted %d/%d, want %d each way", to, from, conns*size)
	}
}

func echoThrough(addr string, msg []byte) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	writeErr := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		writeErr <- err
	}()
	got, err := io.ReadAll(c)
	if werr := <-writeErr; werr != nil {
		return werr
	}
	if err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo returned %d bytes, want %d", len(got), len(msg))
	}
	return nil
}

func TestRelayCloseEndsConnections(t *testing.T) {
	r, err := NewRelay("127.0.0.1:0", startTCPServer(t, echo))
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("echo through relay: %v", err)
	}
	if n := r.Open(); n != 1 {
		t.Errorf("Open = %d with one connection relayed, want 1", n)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n := r.Open(); n != 0 {
		t.Errorf("Open = %d after Close, want 0", n)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after Close = %v, want the connection closed", err)
	}
	if c2, err := net.DialTimeout("tcp", r.Addr(), time.Second); err == nil {
		c2.Close()
		t.Fatal("relay still accepts after Close")
	}
}

func TestRelayTargetDown(t *testing.T) {
	r := newTestRelay(t, "127.0.0.1:"+strconv.Itoa(testkit.FreePort(t)))
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read = %v, want the connection closed when the target is down", err)
	}
}
