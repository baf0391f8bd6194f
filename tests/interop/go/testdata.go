package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// ------------------------------------------------------------------------ sidecar shapes

type logExpected struct {
	Origin  string `json:"origin"`
	Vkey    string `json:"vkey"`
	KeyID   string `json:"key_id"`
	Size    int64  `json:"size"`
	Entries []struct {
		Index    int64  `json:"index"`
		File     string `json:"file"`
		Kind     string `json:"kind"`
		SHA256   string `json:"sha256"`
		LeafHash string `json:"leaf_hash"`
	} `json:"entries"`
	Roots       map[string]string `json:"roots"`
	Checkpoints []struct {
		File     string `json:"file"`
		Size     uint64 `json:"size"`
		RootHash string `json:"root_hash"`
		RootB64  string `json:"root_hash_base64"`
		Body     string `json:"body"`
	} `json:"checkpoints"`
}

type inclusionCase struct {
	Index    int64    `json:"index"`
	TreeSize int64    `json:"tree_size"`
	LeafHash string   `json:"leaf_hash"`
	Proof    []string `json:"proof"`
	RootHash string   `json:"root_hash"`
	Valid    bool     `json:"valid"`
	Why      string   `json:"why"`
}

type consistencyCase struct {
	Size1 int64    `json:"size1"`
	Size2 int64    `json:"size2"`
	Root1 string   `json:"root1"`
	Root2 string   `json:"root2"`
	Proof []string `json:"proof"`
	Valid bool     `json:"valid"`
	Why   string   `json:"why"`
}

type recordExpected struct {
	Length     int    `json:"length"`
	Magic      string `json:"magic"`
	Version    uint16 `json:"version"`
	TreeSize   uint64 `json:"tree_size"`
	RootHash   string `json:"root_hash"`
	Origin     string `json:"origin"`
	OriginHash string `json:"origin_hash"`
	Checkpoint string `json:"checkpoint"`
}

// ------------------------------------------------------------------------ helpers

func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func unhex(s string) ([]byte, error) { return hex.DecodeString(s) }

func hash32(s string) (tlog.Hash, error) {
	var h tlog.Hash
	b, err := hex.DecodeString(s)
	if err != nil {
		return h, err
	}
	if len(b) != len(h) {
		return h, fmt.Errorf("hash %q is %d bytes, not 32", s, len(b))
	}
	copy(h[:], b)
	return h, nil
}

func hashList(ss []string) ([]tlog.Hash, [][]byte, error) {
	hs := make([]tlog.Hash, len(ss))
	raw := make([][]byte, len(ss))
	for i, s := range ss {
		h, err := hash32(s)
		if err != nil {
			return nil, nil, err
		}
		hs[i], raw[i] = h, h[:]
	}
	return hs, raw, nil
}

// safely runs f, turning a panic in a third-party function into an error.
func safely(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return f()
}

// memHashes is a tlog.HashReader over the stored hashes of a tree built in memory.
type memHashes []tlog.Hash

func (m memHashes) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(m)) {
			return nil, fmt.Errorf("no stored hash %d", x)
		}
		out[i] = m[x]
	}
	return out, nil
}

var rfc9162 = rfc6962.DefaultHasher

// ------------------------------------------------------------------------ the whole testdata

func checkTestdata(c *checker, dir string) error {
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return fmt.Errorf("%s is not a testdata directory", dir)
	}
	vkeyBytes, err := os.ReadFile(filepath.Join(dir, "log", "vkey.txt"))
	if err != nil {
		return err
	}
	vkey := string(bytes.TrimRight(vkeyBytes, "\n"))
	if err := checkLog(c, filepath.Join(dir, "log"), vkey); err != nil {
		return err
	}
	if err := checkRecordFile(c, dir, vkey); err != nil {
		return err
	}
	if err := checkMessageFile(c, filepath.Join(dir, "message")); err != nil {
		return err
	}
	if err := checkEnrollmentFile(c, filepath.Join(dir, "enrollment")); err != nil {
		return err
	}
	return checkBundleFile(c, filepath.Join(dir, "bundle"), vkey)
}

// ------------------------------------------------------------------------ log: notes, tree, proofs

func checkLog(c *checker, dir, vkey string) error {
	var exp logExpected
	if err := readJSON(filepath.Join(dir, "log.expected.json"), &exp); err != nil {
		return err
	}
	verifier, err := note.NewVerifier(vkey)
	if !c.check(err, "log/vkey.txt: note.NewVerifier") {
		return nil
	}
	if exp.Vkey != vkey || verifier.Name() != exp.Origin ||
		fmt.Sprintf("%08x", verifier.KeyHash()) != exp.KeyID {
		c.fail("log key: note.NewVerifier gives name %q key hash %08x; log.expected.json says %q %s",
			verifier.Name(), verifier.KeyHash(), exp.Origin, exp.KeyID)
	} else {
		c.ok("log/vkey.txt parses with note.NewVerifier (name %s, key hash %08x)", verifier.Name(),
			verifier.KeyHash())
	}

	// every checkpoint: note.Open with the log key, then transparency-dev's ParseCheckpoint
	cpRoots := map[int64]tlog.Hash{}
	for _, cp := range exp.Checkpoints {
		data, err := os.ReadFile(filepath.Join(dir, cp.File))
		if err != nil {
			return err
		}
		n, err := note.Open(data, note.VerifierList(verifier))
		if !c.check(err, "log/%s: note.Open", cp.File) {
			continue
		}
		if n.Text != cp.Body || len(n.Sigs) != 1 || n.Sigs[0].Name != exp.Origin {
			c.fail("log/%s: note.Open text %q / %d signatures differ from the expected body %q",
				cp.File, n.Text, len(n.Sigs), cp.Body)
			continue
		}
		parsed, rest, _, err := log.ParseCheckpoint(data, exp.Origin, verifier)
		if !c.check(err, "log/%s: log.ParseCheckpoint", cp.File) {
			continue
		}
		if parsed.Size != cp.Size || hex.EncodeToString(parsed.Hash) != cp.RootHash || len(rest) != 0 ||
			base64.StdEncoding.EncodeToString(parsed.Hash) != cp.RootB64 {
			c.fail("log/%s: ParseCheckpoint gives size %d root %x (+%d extension bytes); expected %d %s",
				cp.File, parsed.Size, parsed.Hash, len(rest), cp.Size, cp.RootHash)
			continue
		}
		var h tlog.Hash
		copy(h[:], parsed.Hash)
		cpRoots[int64(parsed.Size)] = h
		c.ok("log/%s: signed note verifies, checkpoint size %d root %x", cp.File, parsed.Size, parsed.Hash[:6])
	}

	// the tree, rebuilt by tlog from the entries: leaf hashes and the root at every size
	var stored memHashes
	for i, e := range exp.Entries {
		data, err := os.ReadFile(filepath.Join(dir, e.File))
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		leaf := tlog.RecordHash(data)
		if hex.EncodeToString(sum[:]) != e.SHA256 || hex.EncodeToString(leaf[:]) != e.LeafHash ||
			!bytes.Equal(rfc9162.HashLeaf(data), leaf[:]) {
			c.fail("log/%s: tlog.RecordHash %x / sha256 %x differ from expected leaf %s / %s",
				e.File, leaf, sum, e.LeafHash, e.SHA256)
		}
		hs, err := tlog.StoredHashes(int64(i), data, stored)
		if !c.check(err, "log/%s: tlog.StoredHashes", e.File) {
			return nil
		}
		stored = append(stored, hs...)
	}
	if int64(len(exp.Entries)) != exp.Size {
		c.fail("log.expected.json lists %d entries for size %d", len(exp.Entries), exp.Size)
	}
	rootsOK := 0
	for s := int64(1); s <= exp.Size; s++ {
		th, err := tlog.TreeHash(s, stored)
		if !c.check(err, "tlog.TreeHash(%d)", s) {
			continue
		}
		if hex.EncodeToString(th[:]) != exp.Roots[strconv.FormatInt(s, 10)] {
			c.fail("tlog.TreeHash(%d) = %x; log.expected.json says %s", s, th, exp.Roots[strconv.FormatInt(s, 10)])
			continue
		}
		if r, ok := cpRoots[s]; ok && r != th {
			c.fail("checkpoint of size %d has root %x, tlog computes %x", s, r, th)
			continue
		}
		rootsOK++
	}
	c.ok("tlog rebuilt the %d-entry tree: leaf hashes and roots of sizes 1..%d match (%d checkpoint roots)",
		len(exp.Entries), rootsOK, len(cpRoots))

	// inclusion proofs: tlog and transparency-dev both accept the valid ones, both reject the
	// others, and tlog's own proof for the same leaf is byte for byte ours
	var inc struct {
		Proofs []inclusionCase `json:"proofs"`
	}
	if err := readJSON(filepath.Join(dir, "inclusion.json"), &inc); err != nil {
		return err
	}
	good, bad := 0, 0
	for k, p := range inc.Proofs {
		what := fmt.Sprintf("inclusion.json #%d (index %d in size %d, valid=%v %s)", k, p.Index, p.TreeSize, p.Valid, p.Why)
		if checkInclusionCase(c, what, p, stored) {
			if p.Valid {
				good++
			} else {
				bad++
			}
		}
	}
	c.ok("inclusion proofs: %d valid ones accepted, %d invalid ones rejected (tlog.CheckRecord, proof.VerifyInclusion; tlog.ProveRecord gives the same hashes)", good, bad)

	var cons struct {
		Proofs []consistencyCase `json:"proofs"`
	}
	if err := readJSON(filepath.Join(dir, "consistency.json"), &cons); err != nil {
		return err
	}
	good, bad = 0, 0
	for k, p := range cons.Proofs {
		what := fmt.Sprintf("consistency.json #%d (%d -> %d, valid=%v %s)", k, p.Size1, p.Size2, p.Valid, p.Why)
		if checkConsistencyCase(c, what, p, stored) {
			if p.Valid {
				good++
			} else {
				bad++
			}
		}
	}
	c.ok("consistency proofs: %d valid ones accepted, %d invalid ones rejected (tlog.CheckTree, proof.VerifyConsistency; tlog.ProveTree gives the same hashes)", good, bad)
	return nil
}

func checkInclusionCase(c *checker, what string, p inclusionCase, stored memHashes) bool {
	leaf, err1 := hash32(p.LeafHash)
	root, err2 := hash32(p.RootHash)
	hs, raw, err3 := hashList(p.Proof)
	if err := errors.Join(err1, err2, err3); err != nil {
		c.fail("%s: %v", what, err)
		return false
	}
	errT := safely(func() error { return tlog.CheckRecord(hs, p.TreeSize, root, p.Index, leaf) })
	errM := safely(func() error {
		return proof.VerifyInclusion(rfc9162, uint64(p.Index), uint64(p.TreeSize), leaf[:], raw, root[:])
	})
	if p.Valid {
		if errT != nil || errM != nil {
			c.fail("%s: rejected: tlog.CheckRecord: %v; proof.VerifyInclusion: %v", what, errT, errM)
			return false
		}
		mine, err := tlog.ProveRecord(p.TreeSize, p.Index, stored)
		if err != nil || len(mine) != len(hs) {
			c.fail("%s: tlog.ProveRecord gives %d hashes (%v), the file %d", what, len(mine), err, len(hs))
			return false
		}
		for i := range mine {
			if mine[i] != hs[i] {
				c.fail("%s: hash %d differs from tlog.ProveRecord's %x", what, i, mine[i])
				return false
			}
		}
		return true
	}
	if errT == nil || errM == nil {
		c.fail("%s: accepted a proof that must fail: tlog.CheckRecord: %v; proof.VerifyInclusion: %v", what, errT, errM)
		return false
	}
	return true
}

func checkConsistencyCase(c *checker, what string, p consistencyCase, stored memHashes) bool {
	r1, err1 := hash32(p.Root1)
	r2, err2 := hash32(p.Root2)
	hs, raw, err3 := hashList(p.Proof)
	if err := errors.Join(err1, err2, err3); err != nil {
		c.fail("%s: %v", what, err)
		return false
	}
	errT := safely(func() error { return tlog.CheckTree(hs, p.Size2, r2, p.Size1, r1) })
	errM := safely(func() error {
		return proof.VerifyConsistency(rfc9162, uint64(p.Size1), uint64(p.Size2), raw, r1[:], r2[:])
	})
	if p.Valid {
		if errT != nil || errM != nil {
			c.fail("%s: rejected: tlog.CheckTree: %v; proof.VerifyConsistency: %v", what, errT, errM)
			return false
		}
		mine, err := tlog.ProveTree(p.Size2, p.Size1, stored)
		if err != nil || len(mine) != len(hs) {
			c.fail("%s: tlog.ProveTree gives %d hashes (%v), the file %d", what, len(mine), err, len(hs))
			return false
		}
		for i := range mine {
			if mine[i] != hs[i] {
				c.fail("%s: hash %d differs from tlog.ProveTree's %x", what, i, mine[i])
				return false
			}
		}
		return true
	}
	if errT == nil || errM == nil {
		c.fail("%s: accepted a proof that must fail: tlog.CheckTree: %v; proof.VerifyConsistency: %v", what, errT, errM)
		return false
	}
	return true
}

// ------------------------------------------------------------------------ anchor record

// anchorRecord is the 78-byte record of docs/anchor-record.md §1, parsed from the spec alone.
type anchorRecord struct {
	Version    uint16
	TreeSize   uint64
	RootHash   []byte
	OriginHash []byte
}

func parseRecord(b []byte) (anchorRecord, error) {
	if len(b) != 78 {
		return anchorRecord{}, fmt.Errorf("anchor record is %d bytes, not 78", len(b))
	}
	if string(b[:4]) != "FPAN" {
		return anchorRecord{}, fmt.Errorf("anchor record magic %q is not FPAN", b[:4])
	}
	r := anchorRecord{
		Version:    binary.BigEndian.Uint16(b[4:6]),
		TreeSize:   binary.BigEndian.Uint64(b[6:14]),
		RootHash:   b[14:46],
		OriginHash: b[46:78],
	}
	if r.Version != 1 {
		return anchorRecord{}, fmt.Errorf("anchor record version %d is not 1", r.Version)
	}
	return r, nil
}

func checkRecordFile(c *checker, dir, vkey string) error {
	var exp recordExpected
	if err := readJSON(filepath.Join(dir, "anchor-record", "record.expected.json"), &exp); err != nil {
		return err
	}
	data, err := os.ReadFile(filepath.Join(dir, "anchor-record", "record.bin"))
	if err != nil {
		return err
	}
	r, err := parseRecord(data)
	if !c.check(err, "anchor-record/record.bin") {
		return nil
	}
	oh := sha256.Sum256([]byte(exp.Origin))
	if len(data) != exp.Length || exp.Magic != "FPAN" || r.Version != exp.Version || r.TreeSize != exp.TreeSize ||
		hex.EncodeToString(r.RootHash) != exp.RootHash || !bytes.Equal(r.OriginHash, oh[:]) ||
		hex.EncodeToString(oh[:]) != exp.OriginHash {
		c.fail("anchor-record/record.bin: parsed %+v; expected %+v", r, exp)
		return nil
	}
	// the record must be derivable from the signed checkpoint it names, with nothing else
	noteData, err := os.ReadFile(filepath.Join(dir, exp.Checkpoint))
	if err != nil {
		return err
	}
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		return err
	}
	cp, _, _, err := log.ParseCheckpoint(noteData, exp.Origin, verifier)
	if !c.check(err, "%s: log.ParseCheckpoint", exp.Checkpoint) {
		return nil
	}
	if cp.Size != r.TreeSize || !bytes.Equal(cp.Hash, r.RootHash) {
		c.fail("anchor-record/record.bin: size %d root %x, but %s says %d %x", r.TreeSize, r.RootHash,
			exp.Checkpoint, cp.Size, cp.Hash)
		return nil
	}
	c.ok("anchor-record/record.bin: FPAN v1, size %d, root and SHA-256(origin) match %s", r.TreeSize, exp.Checkpoint)
	return nil
}
