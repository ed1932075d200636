package mesh

import (
	"bufio"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
)

// hello is the first frame each side sends. mac is set only by the acceptor.
type hello struct {
	version uint64
	node    string
	epoch   uint64
	nonce   [nonceSize]byte
	mac     []byte
}

// rejectError is a handshake failure with the reason label it is counted under.
type rejectError struct {
	reason string
	err    error
}

func (e *rejectError) Error() string { return e.reason + ": " + e.err.Error() }
func (e *rejectError) Unwrap() error { return e.err }

// Reasons for moha_link_rejected_total.
const (
	reasonBadMagic    = "bad_magic"
	reasonBadVersion  = "bad_version"
	reasonUnknownNode = "unknown_node"
	reasonBadMAC      = "bad_mac"
	reasonTimeout     = "timeout"
	reasonGarbage     = "garbage"
	reasonClosed      = "closed"
	reasonTLS         = "tls"
	reasonTLSIdentity = "tls_identity" // a valid certificate that names another node
	reasonBusy        = "busy"
)

// ErrAuth reports a handshake that did not authenticate the other side.
var ErrAuth = errors.New("cluster: handshake failed")

func reject(reason string, format string, args ...any) error {
	return &rejectError{reason: reason, err: fmt.Errorf("%w: "+format, append([]any{ErrAuth}, args...)...)}
}

// rejectReason classifies any handshake error for the rejected counter.
func rejectReason(err error) string {
	var re *rejectError
	switch {
	case errors.As(err, &re):
		return re.reason
	case errors.Is(err, os.ErrDeadlineExceeded):
		return reasonTimeout
	case errors.Is(err, ErrProtocol):
		return reasonGarbage
	default:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return reasonTimeout
		}
		return reasonClosed
	}
}

// handshaker holds what both sides of a handshake need from the mesh.
type handshaker struct {
	node   string
	epoch  uint64
	secret []byte
	// known reports whether name may open a link to us as the dialer.
	known func(name string) bool
}

// dial runs the dialer's side over rw, expecting the acceptor to be peer.
// It returns the acceptor's hello once the acceptor proved the secret.
func (h *handshaker) dial(rw io.ReadWriter, br *bufio.Reader, peer string) (hello, error) {
	mine := hello{version: protocolVersion, node: h.node, epoch: h.epoch}
	if _, err := rand.Read(mine.nonce[:]); err != nil {
		return hello{}, fmt.Errorf("nonce: %w", err)
	}
	if err := writeHello(rw, &mine); err != nil {
		return hello{}, err
	}
	theirs, err := readHello(br, true)
	if err != nil {
		return hello{}, err
	}
	if theirs.node != peer {
		return hello{}, reject(reasonUnknownNode, "expected node %q, got %q", peer, theirs.node)
	}
	want := h.mac("moha/1 accept", mine.nonce[:], theirs.nonce[:], h.node, peer)
	if !hmac.Equal(want, theirs.mac) {
		return hello{}, reject(reasonBadMAC, "acceptor %q did not prove the cluster secret", peer)
	}
	auth := h.mac("moha/1 dial", theirs.nonce[:], mine.nonce[:], h.node, peer)
	if _, err := rw.Write(appendFrame(nil, frameAuth, auth)); err != nil {
		return hello{}, fmt.Errorf("write auth: %w", err)
	}
	return theirs, nil
}

// accept runs the acceptor's side over rw. It returns the dialer's hello
// only after a valid AUTH; nothing else the dialer sends is ever read.
func (h *handshaker) accept(rw io.ReadWriter, br *bufio.Reader) (hello, error) {
	theirs, err := readHello(br, false)
	if err != nil {
		return hello{}, err
	}
	if !h.known(theirs.node) {
		return hello{}, reject(reasonUnknownNode, "node %q may not dial %q", theirs.node, h.node)
	}
	mine := hello{version: protocolVersion, node: h.node, epoch: h.epoch}
	if _, err := rand.Read(mine.nonce[:]); err != nil {
		return hello{}, fmt.Errorf("nonce: %w", err)
	}
	mine.mac = h.mac("moha/1 accept", theirs.nonce[:], mine.nonce[:], theirs.node, h.node)
	if err := writeHello(rw, &mine); err != nil {
		return hello{}, err
	}
	typ, body, err := readFrame(br, maxPreAuthFrame)
	if err != nil {
		return hello{}, fmt.Errorf("read auth: %w", err)
	}
	if typ != frameAuth || len(body) != macSize {
		return hello{}, reject(reasonGarbage, "expected AUTH, got frame type %d (%d bytes)", typ, len(body))
	}
	want := h.mac("moha/1 dial", mine.nonce[:], theirs.nonce[:], theirs.node, h.node)
	if !hmac.Equal(want, body) {
		return hello{}, reject(reasonBadMAC, "dialer %q did not prove the cluster secret", theirs.node)
	}
	return theirs, nil
}

// mac computes HMAC-SHA256(secret, label | nonce1 | nonce2 | dialer | acceptor),
// with the node names length-prefixed.
func (h *handshaker) mac(label string, nonce1, nonce2 []byte, dialer, acceptor string) []byte {
	m := hmac.New(sha256.New, h.secret)
	m.Write([]byte(label))
	m.Write(nonce1)
	m.Write(nonce2)
	m.Write(appendString(nil, dialer))
	m.Write(appendString(nil, acceptor))
	return m.Sum(nil)
}

func writeHello(w io.Writer, h *hello) error {
	body := make([]byte, 0, 64+len(h.node)+nonceSize+len(h.mac))
	body = append(body, protocolMagic...)
	body = binary.AppendUvarint(body, h.version)
	body = appendString(body, h.node)
	body = binary.BigEndian.AppendUint64(body, h.epoch)
	body = append(body, h.nonce[:]...)
	body = append(body, h.mac...)
	if _, err := w.Write(appendFrame(nil, frameHello, body)); err != nil {
		return fmt.Errorf("write hello: %w", err)
	}
	return nil
}

// readHello reads and checks a HELLO frame; withMAC is true for the
// acceptor's hello, which carries a mac.
func readHello(br *bufio.Reader, withMAC bool) (hello, error) {
	typ, body, err := readFrame(br, maxPreAuthFrame)
	if err != nil {
		return hello{}, fmt.Errorf("read hello: %w", err)
	}
	if typ != frameHello {
		return hello{}, reject(reasonGarbage, "expected HELLO, got frame type %d", typ)
	}
	if len(body) < len(protocolMagic) || string(body[:len(protocolMagic)]) != protocolMagic {
		return hello{}, reject(reasonBadMagic, "bad magic")
	}
	d := decoder{buf: body[len(protocolMagic):]}
	var h hello
	h.version = d.uvarint()
	if d.err == nil && h.version != protocolVersion {
		return hello{}, reject(reasonBadVersion, "protocol version %d, want %d", h.version, protocolVersion)
	}
	h.node = d.string()
	tail := nonceSize + 8
	if withMAC {
		tail += macSize
	}
	if d.err != nil || len(d.buf) != tail || h.node == "" {
		return hello{}, reject(reasonGarbage, "malformed hello")
	}
	h.epoch = binary.BigEndian.Uint64(d.buf)
	copy(h.nonce[:], d.buf[8:])
	if withMAC {
		h.mac = d.buf[8+nonceSize:]
	}
	return h, nil
}
