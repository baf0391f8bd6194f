package main

// -tiles DIR: read a tiles directory written by anchor/tiles.py (C2SP tlog-tiles) as a third
// party would, with golang.org/x/mod/sumdb/tlog's TileHashReader and sumdb/note:
//
//   - the checkpoint file must open with note.Open under the pinned -vkey and parse with
//     transparency-dev formats/log (unknown signature lines, witnesses' cosignatures, ride along);
//   - each -witness VKEY (a cosignature/v1 key, type 0x04) must have a valid cosignature on it,
//     checked by the small verifier below (crypto/ed25519 over "cosignature/v1\ntime T\n" + body);
//   - tlog.TreeHash over a TileHashReader (which authenticates every tile it reads against the
//     checkpoint's root) must rebuild the signed root;
//   - every entry of every entry bundle (uint16 big-endian length, bytes) must hash
//     (tlog.RecordHash) to the leaf hash the authenticated tiles hold.
//
// Go's tlog names tiles "tile/<H>/<L>/<N>[.p/<W>]" with the height H; C2SP drops it
// ("tile/<L>/<N>[.p/<W>]"), so the TileReader maps one path to the other.

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const tileHeight = 8

// dirTiles serves tlog tiles from a C2SP tiles directory.
type dirTiles struct {
	dir   string
	reads int
}

func (d *dirTiles) Height() int { return tileHeight }

// c2spPath maps Go's "tile/8/L/N[.p/W]" to C2SP's "tile/L/N[.p/W]".
func c2spPath(t tlog.Tile) (string, error) {
	p := t.Path()
	prefix := fmt.Sprintf("tile/%d/", tileHeight)
	if t.L < 0 || !strings.HasPrefix(p, prefix) {
		return "", fmt.Errorf("not a hash tile: %s", p)
	}
	return "tile/" + strings.TrimPrefix(p, prefix), nil
}

func (d *dirTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		p, err := c2spPath(t)
		if err != nil {
			return nil, err
		}
		data, err := os.ReadFile(filepath.Join(d.dir, filepath.FromSlash(p)))
		if err != nil {
			return nil, err
		}
		d.reads++
		out[i] = data
	}
	return out, nil
}

func (d *dirTiles) SaveTiles([]tlog.Tile, [][]byte) {}

// cosigV1 is a note.Verifier for C2SP tlog-cosignature v1 (Ed25519, key type 0x04).
type cosigV1 struct {
	name string
	hash uint32
	pub  ed25519.PublicKey
	seen []int64 // timestamps of the cosignatures it verified
}

func newCosigV1(vkey string) (*cosigV1, error) {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return nil, errors.New("witness vkey must be name+hexid+base64")
	}
	id, err := strconv.ParseUint(parts[1], 16, 32)
	if err != nil || len(parts[1]) != 8 {
		return nil, fmt.Errorf("witness vkey key ID %q", parts[1])
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) != 33 || raw[0] != 0x04 {
		return nil, errors.New("witness vkey is not an Ed25519 cosignature/v1 key (type 0x04)")
	}
	h := sha256.Sum256(append([]byte(parts[0]+"\n"), raw...))
	if binary.BigEndian.Uint32(h[:4]) != uint32(id) {
		return nil, errors.New("witness vkey key ID does not match its name and key")
	}
	return &cosigV1{name: parts[0], hash: uint32(id), pub: ed25519.PublicKey(raw[1:])}, nil
}

func (v *cosigV1) Name() string    { return v.name }
func (v *cosigV1) KeyHash() uint32 { return v.hash }
func (v *cosigV1) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	t := binary.BigEndian.Uint64(sig[:8])
	if t > 1<<63-1 {
		return false
	}
	signed := append([]byte(fmt.Sprintf("cosignature/v1\ntime %d\n", t)), msg...)
	if !ed25519.Verify(v.pub, signed, sig[8:]) {
		return false
	}
	v.seen = append(v.seen, int64(t))
	return true
}

func checkTiles(c *checker, dir, vkey string, witnesses []string) {
	label := "tiles " + dir
	noteBytes, err := os.ReadFile(filepath.Join(dir, "checkpoint"))
	if !c.check(err, "%s: checkpoint", label) {
		return
	}
	logV, err := note.NewVerifier(vkey)
	if !c.check(err, "%s: -vkey", label) {
		return
	}
	verifiers := []note.Verifier{logV}
	var cosigners []*cosigV1
	for _, w := range witnesses {
		cv, err := newCosigV1(w)
		if !c.check(err, "%s: -witness %s", label, w) {
			return
		}
		cosigners = append(cosigners, cv)
		verifiers = append(verifiers, cv)
	}
	n, err := note.Open(noteBytes, note.VerifierList(verifiers...))
	if !c.check(err, "%s: note.Open of the checkpoint", label) {
		return
	}
	for _, cv := range cosigners {
		found := false
		for _, s := range n.Sigs {
			found = found || (s.Name == cv.name && s.Hash == cv.hash)
		}
		if !found || len(cv.seen) == 0 {
			c.fail("%s: no valid cosignature by witness %s", label, cv.name)
			return
		}
	}
	origin, _, _ := strings.Cut(n.Text, "\n")
	cp, _, _, err := log.ParseCheckpoint(noteBytes, origin, logV)
	if !c.check(err, "%s: formats/log.ParseCheckpoint", label) {
		return
	}
	size := int64(cp.Size)
	var root tlog.Hash
	if len(cp.Hash) != len(root) {
		c.fail("%s: root hash is %d bytes", label, len(cp.Hash))
		return
	}
	copy(root[:], cp.Hash)
	tiles := &dirTiles{dir: dir}
	reader := tlog.TileHashReader(tlog.Tree{N: size, Hash: root}, tiles)
	var got tlog.Hash
	err = safely(func() (e error) { got, e = tlog.TreeHash(size, reader); return })
	if !c.check(err, "%s: tlog.TreeHash over the hash tiles", label) {
		return
	}
	if got != root {
		c.fail("%s: tiles give root %s, checkpoint says %s", label, got, root)
		return
	}
	// every entry of every bundle against the authenticated leaf hashes
	entries := int64(0)
	for start := int64(0); start < size; start += 1 << tileHeight {
		width := min(size-start, 1<<tileHeight)
		t := tlog.Tile{H: tileHeight, L: 0, N: start >> tileHeight, W: int(width)}
		p, _ := c2spPath(t)
		p = "tile/entries/" + strings.TrimPrefix(p, "tile/0/")
		bundle, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(p)))
		if !c.check(err, "%s: entry bundle", label) {
			return
		}
		idx := make([]int64, width)
		for i := range idx {
			idx[i] = tlog.StoredHashIndex(0, start+int64(i))
		}
		var leaves []tlog.Hash
		err = safely(func() (e error) { leaves, e = reader.ReadHashes(idx); return })
		if !c.check(err, "%s: leaf hashes of %s", label, p) {
			return
		}
		rest := bundle
		for i := int64(0); i < width; i++ {
			if len(rest) < 2 || len(rest) < 2+int(binary.BigEndian.Uint16(rest)) {
				c.fail("%s: %s is cut short at entry %d", label, p, start+i)
				return
			}
			l := int(binary.BigEndian.Uint16(rest))
			if tlog.RecordHash(rest[2:2+l]) != leaves[i] {
				c.fail("%s: entry %d in %s does not hash to its leaf", label, start+i, p)
				return
			}
			rest = rest[2+l:]
			entries++
		}
		if len(rest) != 0 {
			c.fail("%s: %s has %d bytes after entry %d", label, p, len(rest), start+width-1)
			return
		}
	}
	c.ok("%s: checkpoint %s size %d, root %s rebuilt from %d tile read(s), %d entries, %d cosignature(s)",
		label, origin, size, root, tiles.reads, entries, len(cosigners))
}
