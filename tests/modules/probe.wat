;; State-leak probe: {"dirty":false} only when nothing from an earlier call is visible.
;; Every call then leaves traces everywhere a reused instance or a badly reset pool slot
;; would keep them: a mutable global, linear memory inside the first page (the memset
;; window of the pooling allocator) and beyond it (a grown page), and a data segment.
;; Input `true` makes it trap after leaving its traces.
(module
  (memory (export "memory") 1)
  (global $seen (mut i32) (i32.const 0))
  (global $heap (mut i32) (i32.const 1024))
  (data (i32.const 16) "{\"dirty\":false}")
  (data (i32.const 48) "{\"dirty\":true}")
  (data (i32.const 96) "canary")
  (func (export "alloc") (param $len i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $len)))
    (local.get $ptr))
  (func (export "decide") (param $ptr i32) (param $len i32) (result i64)
    (local $dirty i32)
    (local.set $dirty
      (i32.or
        (i32.or (global.get $seen) (i32.load (i32.const 60000)))
        (i32.or
          (i32.ne (memory.size) (i32.const 1))
          ;; "cana" read as a little-endian i32
          (i32.ne (i32.load (i32.const 96)) (i32.const 0x616e6163)))))
    (global.set $seen (i32.const 1))
    (i32.store (i32.const 60000) (i32.const 42))
    (i32.store (i32.const 96) (i32.const 0))
    (if (i32.ne (memory.grow (i32.const 1)) (i32.const -1))
      (then (i32.store (i32.const 70000) (i32.const 42))))
    (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 116))  ;; 't'
      (then unreachable))
    (if (result i64) (local.get $dirty)
      (then (i64.or (i64.shl (i64.const 48) (i64.const 32)) (i64.const 14)))
      (else (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 15))))))
