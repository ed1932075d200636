// Package freeport chooses local TCP ports nobody listens on, for the
// processes tools and tests start (brokers, agents, HAProxy) on 127.0.0.1.
// It imports the standard library only, so that internal/launch and
// internal/testkit share it: testkit cannot import launch (launch imports
// internal/render, whose in-package tests import testkit).
//
// A port chosen here is free when chosen, not reserved: whoever binds it
// must retry with another one if someone else took it meanwhile.
package freeport

import (
	"fmt"
	"net"
	"strconv"
)

// Port asks the kernel for a free TCP port on host.
func Port(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Addr returns host:port with a free port.
func Addr(host string) (string, error) {
	p, err := Port(host)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(host, strconv.Itoa(p)), nil
}

// Addrs returns n distinct free host:port addresses: the listeners are
// held until all are chosen, so the kernel cannot hand out one port twice.
func Addrs(host string, n int) ([]string, error) {
	addrs, release, err := Reserve(host, n)
	if err != nil {
		return nil, err
	}
	release()
	return addrs, nil
}

// Reserve returns n distinct free host:port addresses and keeps them bound
// until release is called, so that ports chosen meanwhile (by Port, Addr or
// another Reserve) are not these: the kernel readily hands a port just
// closed out again.
func Reserve(host string, n int) (addrs []string, release func(), err error) {
	var held []net.Listener
	release = func() {
		for _, ln := range held {
			ln.Close()
		}
	}
	for range n {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			release()
			return nil, nil, fmt.Errorf("find a free port: %w", err)
		}
		held = append(held, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs, release, nil
}
