package agent

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/moha-project/moha/internal/config"
)

// brokerTLSConfig builds the TLS client config for the local broker, or
// nil for plain TCP.
func brokerTLSConfig(n *config.Node) (*tls.Config, error) {
	f := n.Broker.TLS
	if f == nil {
		return nil, nil
	}
	c, err := clientTLS(f)
	if err != nil {
		return nil, fmt.Errorf("agent: nodes[%s].broker.tls: %w", n.Name, err)
	}
	return c, nil
}

// linkTLSConfig builds mutual TLS for agent links from the cluster's shared
// CA, or nil, nil when links run on plain TCP with the HMAC handshake only.
func linkTLSConfig(c *config.Cluster) (server, client *tls.Config, err error) {
	f := c.LinkTLS
	if f == nil {
		return nil, nil, nil
	}
	pool, cert, err := loadTLSFiles(f)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: link_tls: %w", err)
	}
	server = &tls.Config{Certificates: cert, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	client = &tls.Config{Certificates: cert, RootCAs: pool, ServerName: f.ServerName, InsecureSkipVerify: f.InsecureSkipVerify, MinVersion: tls.VersionTLS12}
	return server, client, nil
}

func clientTLS(f *config.TLSFiles) (*tls.Config, error) {
	pool, cert, err := loadTLSFiles(f)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: cert, RootCAs: pool, ServerName: f.ServerName, InsecureSkipVerify: f.InsecureSkipVerify, MinVersion: tls.VersionTLS12}, nil
}

func loadTLSFiles(f *config.TLSFiles) (*x509.CertPool, []tls.Certificate, error) {
	var pool *x509.CertPool
	if f.CA != "" {
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, nil, fmt.Errorf("read ca: %w", err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("ca %s: no PEM certificates", f.CA)
		}
	}
	var certs []tls.Certificate
	if f.Cert != "" {
		c, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, nil, fmt.Errorf("load cert/key: %w", err)
		}
		certs = append(certs, c)
	}
	return pool, certs, nil
}
