package whatsappmedia

import (
	"bufio"
	"io"
	"sync"

	"github.com/avenping/caddy-whatsapp-media/internal/media"
)

// copyBufferSize is the size of pooled copy buffers and buffered readers.
const copyBufferSize = 64 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}

// readerPool hands out buffered readers of one size.
type readerPool struct{ p sync.Pool }

func newReaderPool(size int) *readerPool {
	return &readerPool{sync.Pool{New: func() any { return bufio.NewReaderSize(nil, size) }}}
}

func (rp *readerPool) get(r io.Reader) *bufio.Reader {
	br := rp.p.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

func (rp *readerPool) put(br *bufio.Reader) {
	br.Reset(nil)
	rp.p.Put(br)
}

var (
	// largeReaders read a source in copyBufferSize pieces for a reader
	// that asks for little at a time (mime/multipart's 4 KiB).
	largeReaders = newReaderPool(copyBufferSize)
	// sniffReaders are just large enough to peek at a file's first bytes
	// for MIME sniffing. Once those are read, a Read of at least that
	// size goes straight to the source: the file's bytes are not copied
	// once more through a buffer.
	sniffReaders = newReaderPool(media.SniffLen)
)
