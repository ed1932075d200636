package mesh

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/flate"
)

// Link compression: with Config.Compress a link's writer sends message
// batches as PUBLISH_BATCH_Z frames, one DEFLATE stream per link direction,
// flushed after every batch. The stream keeps its 32 KiB window across
// batches, so a batch of one message is compressed against the ones before
// it: telemetry repeats its field names from message to message, which a
// compressor that started afresh per batch would not see. A receiver
// decodes PUBLISH_BATCH_Z whatever its own setting: the two sides of a link
// may differ while an operator changes the cluster file node by node.

// compressLevel trades ratio for the agent's CPU: DEFLATE's fastest
// level that still matches repeats (klauspost/compress level 1).
const compressLevel = flate.BestSpeed

// deflater compresses one link direction's batches; the writer goroutine
// owns it.
type deflater struct {
	out bytes.Buffer
	w   *flate.Writer
}

func newDeflater() *deflater {
	d := &deflater{}
	d.w, _ = flate.NewWriter(&d.out, compressLevel) // the level is valid
	return d
}

// appendBatch appends to dst the PUBLISH_BATCH_Z body for an uncompressed
// PUBLISH_BATCH body: its length, then the stream's bytes up to a flush.
func (d *deflater) appendBatch(dst, body []byte) ([]byte, error) {
	d.out.Reset()
	if _, err := d.w.Write(body); err != nil {
		return dst, fmt.Errorf("compress batch: %w", err)
	}
	if err := d.w.Flush(); err != nil {
		return dst, fmt.Errorf("compress batch: %w", err)
	}
	dst = binary.AppendUvarint(dst, uint64(len(body)))
	return append(dst, d.out.Bytes()...), nil
}

// inflater decompresses one link direction's batches; the reader goroutine
// owns it. The decoder reads byte by byte from src (an io.ByteReader), so
// it never reads past what a frame brought: every batch ends with a flush,
// which makes all of it decodable from the bytes received so far.
type inflater struct {
	src byteQueue
	r   io.Reader
}

func newInflater() *inflater {
	in := &inflater{}
	in.r = flate.NewReader(&in.src)
	return in
}

// batch returns the uncompressed PUBLISH_BATCH body of a PUBLISH_BATCH_Z
// body, in a slice of its own: the messages decoded from it keep pointing
// into it.
func (in *inflater) batch(z []byte) ([]byte, error) {
	n, k := binary.Uvarint(z)
	if k <= 0 || n > maxFrameSize {
		return nil, fmt.Errorf("%w: compressed batch length", ErrProtocol)
	}
	in.src.push(z[k:])
	// Allocated as the stream delivers it, not at the length claimed.
	var body bytes.Buffer
	body.Grow(min(int(n), 64<<10))
	if _, err := io.CopyN(&body, in.r, int64(n)); err != nil {
		// Short input (the flush's bytes missing) or a corrupt stream: the
		// stream cannot go on.
		return nil, fmt.Errorf("%w: compressed batch: %w", ErrProtocol, err)
	}
	return body.Bytes(), nil
}

// byteQueue hands the decoder the bytes frames brought, in order. Reading
// past them is an error: the sender's flush guarantees it never must.
type byteQueue struct {
	buf []byte
	pos int
}

var errStreamShort = errors.New("compressed stream ends inside a batch")

func (q *byteQueue) push(b []byte) {
	if q.pos == len(q.buf) {
		q.buf, q.pos = q.buf[:0], 0
	}
	q.buf = append(q.buf, b...)
}

func (q *byteQueue) ReadByte() (byte, error) {
	if q.pos == len(q.buf) {
		return 0, errStreamShort
	}
	b := q.buf[q.pos]
	q.pos++
	return b, nil
}

func (q *byteQueue) Read(p []byte) (int, error) {
	if q.pos == len(q.buf) {
		return 0, errStreamShort
	}
	n := copy(p, q.buf[q.pos:])
	q.pos += n
	return n, nil
}
