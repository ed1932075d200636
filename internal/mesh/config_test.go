package mesh

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestConfigValidation(t *testing.T) {
	_, err := New(Config{
		Listen:      "nope",
		Peers:       map[string]string{"x": "127.0.0.1", "": "h:1"},
		Secret:      []byte("short"),
		ServerTLS:   &tls.Config{},
		Window:      -1,
		Heartbeat:   -time.Second,
		BackoffMin:  time.Second,
		BackoffMax:  time.Millisecond,
		BufferBytes: -5,
	}, Handlers{})
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("got %v, want ErrConfig", err)
	}
	msg := err.Error()
	for _, field := range []string{"Node", "Listen", "Peers", "Secret", "ServerTLS/ClientTLS", "Window", "Heartbeat", "BackoffMin", "BufferBytes"} {
		if !strings.Contains(msg, field+":") {
			t.Errorf("no error line for %s in:\n%s", field, msg)
		}
	}
	if lines := strings.Count(msg, "\n") + 1; lines != 10 {
		t.Errorf("%d error lines, want 10 (one per problem):\n%s", lines, msg)
	}

	_, err = New(Config{Node: "a", Listen: ":0", Peers: map[string]string{"a": "h:1"}, Secret: testSecret}, Handlers{})
	if err == nil || !strings.Contains(err.Error(), "contains this node") {
		t.Fatalf("Peers containing Node: %v", err)
	}
}

func TestDefaultsAndLifecycle(t *testing.T) {
	m, err := New(Config{Node: "a", Listen: "127.0.0.1:0", Peers: map[string]string{"b": "127.0.0.1:1"}, Secret: testSecret}, Handlers{})
	if err != nil {
		t.Fatal(err)
	}
	c := m.cfg
	if c.Window != DefaultWindow || c.BufferMessages != DefaultBufferMessages || c.BufferBytes != DefaultBufferBytes ||
		c.InterestGrace != DefaultInterestGrace || c.Heartbeat != DefaultHeartbeat ||
		c.BackoffMin != DefaultBackoffMin || c.BackoffMax != DefaultBackoffMax {
		t.Fatalf("defaults not applied: %+v", c)
	}
	if m.Addr() != nil {
		t.Fatal("Addr before Run")
	}
	// Sends before Run are Buffered once Run starts the notifier; Close
	// before Run reports what is owed and makes Run fail.
	out := newOutcomes(t)
	if err := m.Send(context.Background(), "b", indexed(0), out.done(0)); err != nil {
		t.Fatal(err)
	}
	m.Close()
	m.Close()
	if out.count(Buffered) != 1 {
		t.Fatalf("outcome of a Send before Close: %v", out.got)
	}
	if err := m.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after Close: %v", err)
	}
	if err := m.Send(context.Background(), "b", indexed(1), out.done(1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}

	// Listen failure is Run's error; Run returns nil when its ctx ends.
	taken := startMesh(t, testConfig(t, "x", nil), Handlers{})
	cfg := testConfig(t, "y", nil)
	cfg.Listen = taken.addr()
	busy, _ := New(cfg, Handlers{})
	if err := busy.Run(context.Background()); err == nil {
		t.Fatal("Run on a taken address succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	ok, _ := New(testConfig(t, "z", nil), Handlers{})
	done := make(chan error, 1)
	go func() { done <- ok.Run(ctx) }()
	<-ok.Ready()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if err := ok.Run(context.Background()); err == nil {
		t.Fatal("second Run succeeded")
	}
}

func TestMetricsRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := testConfig(t, "a", map[string]string{"b": "127.0.0.1:1"})
	cfg.Registerer = reg
	if _, err := New(cfg, Handlers{}); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "moha_peer_dropped_messages_total" && len(f.GetMetric()) == len(dropReasons) {
			return
		}
	}
	t.Fatalf("registry lacks a moha_peer_dropped_messages_total series per drop reason for peer b: %d families", len(families))
}

// selfSignedTLS returns server and client configs trusting one
// certificate for 127.0.0.1.
func selfSignedTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "moha test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS13}
	client = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	return server, client
}

func TestTLSLink(t *testing.T) {
	server, client := selfSignedTLS(t)
	withTLS := func(c *Config) { c.ServerTLS, c.ClientTLS = server, client }
	recB := newRecorder()
	a, b := pair(t, withTLS, withTLS, newRecorder(), recB)
	out := newOutcomes(t)
	for i := range 100 {
		a.Send(context.Background(), "b", indexed(i), out.done(i))
	}
	waitFor(t, 5*time.Second, "acked over TLS", func() bool { return out.count(Acked) == 100 })
	if recB.count("a") != 100 {
		t.Fatalf("b got %d messages", recB.count("a"))
	}

	// A plain-TCP dialer is refused by the TLS acceptor.
	plain := testConfig(t, "a", map[string]string{"b": b.addr()})
	before := metric(t, b.reg, "moha_link_rejected_total", map[string]string{"reason": reasonTLS})
	startMesh(t, plain, Handlers{})
	waitFor(t, 5*time.Second, "tls rejection", func() bool {
		return metric(t, b.reg, "moha_link_rejected_total", map[string]string{"reason": reasonTLS}) > before
	})
}

// testCA is a certificate authority issuing node certificates for tests.
type testCA struct {
	t    *testing.T
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "moha test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{t: t, cert: cert, key: key, pool: pool}
}

// node issues a certificate naming only dnsName (no IP address), usable by
// both ends of a link.
func (ca *testCA) node(dnsName string) tls.Certificate {
	ca.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		ca.t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: dnsName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{dnsName}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsAs configures a mesh with mutual TLS presenting cert.
func (ca *testCA) tlsAs(cert tls.Certificate) func(*Config) {
	return func(c *Config) {
		c.ServerTLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: ca.pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
		c.ClientTLS = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: ca.pool, MinVersion: tls.VersionTLS13}
	}
}

// TestTLSIdentity (issue 15 §7): with mutual TLS a node's certificate must
// name that node. Node c's key, valid under the same CA, cannot pose as a
// (the acceptor refuses it) nor as b (the dialer refuses it); each node
// with its own certificate links.
func TestTLSIdentity(t *testing.T) {
	ca := newTestCA(t)
	certA, certB, certC := ca.node("a"), ca.node("b"), ca.node("c")

	// Honest pair: names match (no IP in the certificates: the name suffices).
	a, _ := pair(t, ca.tlsAs(certA), ca.tlsAs(certB), newRecorder(), newRecorder())
	a.stop(t)

	// c's certificate claiming to be a, dialing an honest b: b refuses it.
	b := startMesh(t, withPeers(testConfig(t, "b", nil), map[string]string{"a": closedAddr(t)}, ca.tlsAs(certB)), Handlers{})
	impostorA := startMesh(t, withPeers(testConfig(t, "a", nil), map[string]string{"b": b.addr()}, ca.tlsAs(certC)), Handlers{})
	waitFor(t, 5*time.Second, "b to refuse c's certificate claiming a", func() bool {
		return metric(t, b.reg, "moha_link_rejected_total", map[string]string{"reason": reasonTLSIdentity}) > 0
	})
	if b.up("a") {
		t.Fatal("b took c's certificate for a")
	}
	// b checks the name once the handshake is done, so the impostor may see
	// its side up for a moment; b closes it at once.
	waitFor(t, 5*time.Second, "the impostor's link to be closed by b", func() bool { return !impostorA.up("b") })
	impostorA.stop(t)

	// c's certificate serving as b: the honest dialer a refuses it.
	impostorB := startMesh(t, withPeers(testConfig(t, "b", nil), map[string]string{"a": closedAddr(t)}, ca.tlsAs(certC)), Handlers{})
	honestA := startMesh(t, withPeers(testConfig(t, "a", nil), map[string]string{"b": impostorB.addr()}, ca.tlsAs(certA)), Handlers{})
	waitFor(t, 5*time.Second, "a to refuse c's certificate serving as b", func() bool {
		return metric(t, honestA.reg, "moha_link_rejected_total", map[string]string{"reason": reasonTLSIdentity}) > 0
	})
	if honestA.up("b") {
		t.Fatal("a linked to a server presenting c's certificate")
	}
}

// withPeers sets cfg's peers and applies tweaks.
func withPeers(cfg Config, peers map[string]string, tweaks ...func(*Config)) Config {
	cfg.Peers = peers
	for _, tw := range tweaks {
		tw(&cfg)
	}
	return cfg
}
