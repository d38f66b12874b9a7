;; A decision: {"decision":"deny"} when the input contains the bytes `high`,
;; {"decision":"approve"} otherwise.
(module
  (memory (export "memory") 1)
  (data (i32.const 16) "{\"decision\":\"approve\"}")
  (data (i32.const 64) "{\"decision\":\"deny\"}")
  (global $heap (mut i32) (i32.const 1024))
  (func (export "alloc") (param $len i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $len)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq
              (memory.grow
                (i32.add (i32.const 1)
                  (i32.shr_u (i32.sub (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
                             (i32.const 16))))
              (i32.const -1))
          (then unreachable))))
    (local.get $ptr))
  (func (export "decide") (param $ptr i32) (param $len i32) (result i64)
    (local $i i32)
    (block $done
      (br_if $done (i32.lt_u (local.get $len) (i32.const 4)))
      (loop $scan
        ;; "high" read as a little-endian i32
        (if (i32.eq (i32.load (i32.add (local.get $ptr) (local.get $i))) (i32.const 0x68676968))
          (then (return (i64.or (i64.shl (i64.const 64) (i64.const 32)) (i64.const 19)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $scan (i32.le_u (local.get $i) (i32.sub (local.get $len) (i32.const 4))))))
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 22))))
