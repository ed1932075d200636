package agent_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/log"

	"github.com/moha-project/moha/internal/config"
	"github.com/moha-project/moha/internal/freeport"
	"github.com/moha-project/moha/internal/launch"
	"github.com/moha-project/moha/internal/status"
)

// TestClientTLSThroughHAProxy (issue 15 §3): with client_tls on every
// node, the rendered broker configs get a TLS listener and the rendered
// HAProxy passes TLS through to them. A TLS client through HAProxy's TLS
// port subscribes; a message published on every node reaches it; a client
// that does not trust the brokers' CA is refused.
func TestClientTLSThroughHAProxy(t *testing.T) {
	dir := t.TempDir()
	pool, certFile, keyFile := writeServerCert(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := launch.Up(ctx, launch.Options{Nodes: 2, Dir: t.TempDir(), NewAgent: newAgent, Logger: testLogger(t), Configure: func(cl *config.Cluster) {
		addrs, err := freeport.Addrs("127.0.0.1", len(cl.Nodes))
		if err != nil {
			t.Fatal(err)
		}
		for i, a := range addrs {
			_, port, _ := config.SplitHostPort(a)
			cl.Nodes[i].ClientTLS = &config.ClientTLS{Port: port, Cert: certFile, Key: keyFile}
		}
	}})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	if c.LBTLS == "" {
		t.Fatal("HAProxy has no TLS port")
	}

	msgs := make(chan *paho.Publish, 8)
	sub := tlsClient(t, c.LBTLS, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}, "tls-sub", msgs)
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "tls/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Config.Nodes {
		waitFor(t, 5*time.Second, n.Name+" to know of tls/#", func() bool { return knowsFilter(agentOf(c, n.Name).Status(), "tls/#") })
		connect(t, n.Broker.Address, "tls-pub-"+n.Name).pub("tls/"+n.Name, 1, "over tls")
		select {
		case m := <-msgs:
			if m.Topic != "tls/"+n.Name {
				t.Fatalf("got %s, want tls/%s", m.Topic, n.Name)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("the TLS subscriber did not get what was published on %s", n.Name)
		}
	}

	// A client that does not trust the brokers' certificate: the handshake
	// through HAProxy fails (TLS is end to end, HAProxy only passes it).
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", c.LBTLS, &tls.Config{RootCAs: x509.NewCertPool(), ServerName: "127.0.0.1"})
	if err == nil {
		conn.Close()
		t.Fatal("a client that does not trust the brokers' CA completed the TLS handshake")
	}
}

// knowsFilter reports whether a node's subscriber or one of its peers'
// holds filter.
func knowsFilter(st status.Status, filter string) bool {
	if slices.Contains(st.Advertised, filter) {
		return true
	}
	for _, p := range st.Peers {
		if slices.Contains(p.Interest, filter) {
			return true
		}
	}
	return false
}

// tlsClient connects an MQTT v5 client over TLS.
func tlsClient(t *testing.T, addr string, cfg *tls.Config, id string, msgs chan<- *paho.Publish) *paho.Client {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("tls dial %s: %v", addr, err)
	}
	pc := paho.NewClient(paho.ClientConfig{Conn: conn, PingHandler: noPinger{}, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(r paho.PublishReceived) (bool, error) { msgs <- r.Packet; return true, nil },
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if ack, err := pc.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}); err != nil || ack.ReasonCode >= 0x80 {
		t.Fatalf("tls connect: %v %v", ack, err)
	}
	t.Cleanup(func() { _ = pc.Disconnect(&paho.Disconnect{}) })
	return pc
}

// noPinger sends no PINGREQ. paho.golang's default pinger sends one at
// once after CONNACK from its own goroutine, and paho writes a packet's
// header and body as separate writes: on a TLS connection they are
// separate records, so the PINGREQ can land between the two halves of the
// first SUBSCRIBE, which Mosquitto then disconnects as malformed (about 1
// in 300 connections here, with or without moha). The tests' TLS clients
// live for seconds, well within their keepalive.
type noPinger struct{}

func (noPinger) Run(context.Context, net.Conn, uint16) error { return nil }
func (noPinger) PacketSent()                                 {}
func (noPinger) PacketReceived()                             {}
func (noPinger) PingResp()                                   {}
func (noPinger) SetDebug(log.Logger)                         {}

// writeServerCert writes a self-signed certificate for 127.0.0.1 and its
// key as PEM files under dir, and returns a pool trusting it.
func writeServerCert(t *testing.T, dir string) (pool *x509.CertPool, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "moha test broker"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "broker.pem"), filepath.Join(dir, "broker.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return pool, certFile, keyFile
}
