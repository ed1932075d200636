package session

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// fakeBroker accepts one connection, answers CONNECT with connack (nil: none)
// and then runs after, for behaviour a real broker will not show on demand.
func fakeBroker(t *testing.T, connack *packets.Connack, after func(conn net.Conn, br *bufio.Reader)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	t.Cleanup(func() { l.Close(); <-served })
	go func() {
		defer close(served)
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		br := bufio.NewReader(conn)
		if _, err := packets.ReadPacket(br); err != nil {
			return
		}
		if connack != nil {
			if _, err := connack.WriteTo(conn); err != nil {
				return
			}
		}
		if after != nil {
			after(conn, br)
		}
		// Hold the connection until the client or the test ends it.
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			if _, err := packets.ReadPacket(br); err != nil {
				return
			}
		}
	}()
	return l.Addr().String()
}

func okConnack() *packets.Connack { return &packets.Connack{Properties: &packets.Properties{}} }

func awaitEnd(t *testing.T, s *Session, timeout time.Duration) error {
	t.Helper()
	select {
	case <-s.Done():
		return s.Err()
	case <-time.After(timeout):
		t.Fatalf("session still up after %v", timeout)
		return nil
	}
}

func TestDefaultsWithoutConnackProperties(t *testing.T) {
	addr := fakeBroker(t, okConnack(), nil)
	s := dial(t, addr, "c", nil)
	if got := s.ServerReceiveMaximum(); got != 65535 {
		t.Errorf("ServerReceiveMaximum = %d, want 65535", got)
	}
	if s.SessionPresent() {
		t.Error("SessionPresent without the flag")
	}
}

func TestKeepAliveTimeout(t *testing.T) {
	var pings atomic.Int32
	addr := fakeBroker(t, okConnack(), func(conn net.Conn, br *bufio.Reader) {
		// Read everything, answer nothing: the broker went silent.
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			cp, err := packets.ReadPacket(br)
			if err != nil {
				return
			}
			if cp.Type == packets.PINGREQ {
				pings.Add(1)
			}
		}
	})
	s := dial(t, addr, "c", nil, func(c *Config) { c.KeepAlive = 1 })
	err := awaitEnd(t, s, 5*time.Second)
	if !errors.Is(err, errKeepAlive) {
		t.Errorf("Err = %v, want keep alive timeout", err)
	}
	if pings.Load() == 0 {
		t.Error("no PINGREQ sent while idle")
	}
}

func TestKeepAliveAnswered(t *testing.T) {
	addr := fakeBroker(t, okConnack(), func(conn net.Conn, br *bufio.Reader) {
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			cp, err := packets.ReadPacket(br)
			if err != nil {
				return
			}
			if cp.Type == packets.PINGREQ {
				conn.Write([]byte{packets.PINGRESP << 4, 0})
			}
		}
	})
	s := dial(t, addr, "c", nil, func(c *Config) { c.KeepAlive = 1 })
	select {
	case <-s.Done():
		t.Fatalf("session ended although PINGREQ was answered: %v", s.Err())
	case <-time.After(2500 * time.Millisecond): // longer than 1.5 x keep alive: the session must outlive it
	}
}

func TestBrokerDisconnectNamesReason(t *testing.T) {
	addr := fakeBroker(t, okConnack(), func(conn net.Conn, _ *bufio.Reader) {
		d := &packets.Disconnect{ReasonCode: packets.DisconnectServerShuttingDown, Properties: &packets.Properties{}}
		d.WriteTo(conn)
	})
	s := dial(t, addr, "c", nil)
	err := awaitEnd(t, s, 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "server shutting down (0x8b)") {
		t.Errorf("Err = %v, want it to name 0x8b", err)
	}
}

func TestMalformedPacketEndsSession(t *testing.T) {
	for name, raw := range map[string][]byte{
		"publish qos 3":         {0x36, 6, 0, 1, 't', 0, 1, 0},
		"topic past the end":    {0x30, 3, 0, 9, 't'},
		"remaining length 5B":   {0x30, 0xff, 0xff, 0xff, 0xff, 0x7f},
		"suback length 5B":      {0x90, 0x80, 0x80, 0x80, 0x80, 0x37},
		"unexpected connect":    {0x10, 0},
		"unknown packet type 0": {0x00, 0},
		"qos 1 without id":      {0x32, 6, 0, 1, 't', 0, 0, 0},
	} {
		t.Run(name, func(t *testing.T) {
			addr := fakeBroker(t, okConnack(), func(conn net.Conn, _ *bufio.Reader) { conn.Write(raw) })
			s := dial(t, addr, "c", nil)
			if err := awaitEnd(t, s, 5*time.Second); err == nil {
				t.Error("session ended without an error")
			}
		})
	}
}

func TestDialTimesOutWithoutConnack(t *testing.T) {
	addr := fakeBroker(t, nil, nil)
	start := time.Now()
	_, err := Dial(context.Background(), Config{Addr: addr, ClientID: "c", ConnectTimeout: 300 * time.Millisecond, Logger: testLogger(t)}, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Dial err = %v, want deadline exceeded", err)
	}
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Errorf("Dial took %v", elapsed)
	}
}
