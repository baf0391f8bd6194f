// Command fpcheck reads fieldproof's known-answer files (testdata/) and evidence bundles with
// other people's code, and exits non-zero on any disagreement with our bytes:
//
//   - signed checkpoints: golang.org/x/mod/sumdb/note (note.NewVerifier, note.Open) and
//     github.com/transparency-dev/formats/log (ParseCheckpoint);
//   - Merkle trees and proofs: golang.org/x/mod/sumdb/tlog (RecordHash, StoredHashes, TreeHash,
//     ProveRecord, ProveTree, CheckRecord, CheckTree) and github.com/transparency-dev/merkle
//     (proof.VerifyInclusion, proof.VerifyConsistency with the RFC 6962/9162 hasher);
//   - CBOR (messages, registry events, enrollment requests, bundles): github.com/fxamacker/cbor
//     (strict decoding; re-encoding with its RFC 8949 §4.2.1 core deterministic mode must give
//     our bytes back);
//   - Ed25519 (COSE_Sign1 signatures) and X.509 (the enrollment CSR): the Go standard library.
//
// Usage:
//
//	fpcheck TESTDATA_DIR                           check every known-answer file
//	fpcheck -vkey VKEY -bundle FILE [-bundle FILE]  check bundles against a pinned log key
//	fpcheck -vkey VKEY -tiles DIR [-witness WVKEY]  read a tlog-tiles directory (tiles.go)
//
// Both may be combined. Exit status: 0 all agree, 1 a mismatch (each one printed as FAIL: ...),
// 2 usage or I/O error.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// checker collects failures instead of stopping at the first, so one run shows them all.
type checker struct {
	failures []string
	oks      int
}

func (c *checker) fail(format string, args ...any) {
	// one line per failure, whatever a library's error text looks like
	msg := strings.Join(strings.Fields(fmt.Sprintf(format, args...)), " ")
	c.failures = append(c.failures, msg)
	fmt.Fprintf(os.Stderr, "FAIL: %s\n", msg)
}

func (c *checker) ok(format string, args ...any) {
	c.oks++
	fmt.Printf("ok: %s\n", fmt.Sprintf(format, args...))
}

// check records a failure for a non-nil error and says whether it was nil.
func (c *checker) check(err error, format string, args ...any) bool {
	if err != nil {
		c.fail("%s: %v", fmt.Sprintf(format, args...), err)
		return false
	}
	return true
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	var bundles multiFlag
	vkey := flag.String("vkey", "", "the log's verifier key (name+hexid+base64), pinned for -bundle")
	flag.Var(&bundles, "bundle", "an evidence bundle (.fpb) to check (repeatable; needs -vkey)")
	var tileDirs, witnesses multiFlag
	flag.Var(&tileDirs, "tiles", "a C2SP tlog-tiles directory to read (repeatable; needs -vkey)")
	flag.Var(&witnesses, "witness", "a witness cosignature/v1 vkey whose cosignature -tiles requires (repeatable)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: fpcheck [-vkey VKEY [-bundle FILE ...] [-tiles DIR [-witness WVKEY] ...]] [TESTDATA_DIR]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 1 || (flag.NArg() == 0 && len(bundles) == 0 && len(tileDirs) == 0) {
		flag.Usage()
		os.Exit(2)
	}
	if (len(bundles) > 0 || len(tileDirs) > 0) && *vkey == "" {
		fmt.Fprintln(os.Stderr, "fpcheck: -bundle needs -vkey (the log key to pin)")
		os.Exit(2)
	}
	c := &checker{}
	if flag.NArg() == 1 {
		if err := checkTestdata(c, flag.Arg(0)); err != nil {
			fmt.Fprintf(os.Stderr, "fpcheck: %v\n", err)
			os.Exit(2)
		}
	}
	for _, path := range bundles {
		data, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "fpcheck: %v\n", err)
			os.Exit(2)
		}
		sum := checkBundle(c, path, data, *vkey)
		if sum != nil {
			c.ok("%s: %s", path, sum)
		}
	}
	for _, dir := range tileDirs {
		checkTiles(c, dir, *vkey, witnesses)
	}
	if len(c.failures) > 0 {
		fmt.Fprintf(os.Stderr, "fpcheck: %d mismatch(es), %d check(s) agreed\n", len(c.failures), c.oks)
		os.Exit(1)
	}
	fmt.Printf("fpcheck: all %d checks agree\n", c.oks)
}
