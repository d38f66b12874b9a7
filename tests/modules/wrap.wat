;; Wraps its input in one array: returns "[" input "]" (one level deeper than its input).
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (func (export "alloc") (param $len i32) (result i32)
    (local $ptr i32)
    ;; one byte before and one after the input for the brackets
    (local.set $ptr (i32.add (global.get $heap) (i32.const 1)))
    (global.set $heap (i32.add (local.get $ptr) (i32.add (local.get $len) (i32.const 1))))
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
    (i32.store8 (i32.sub (local.get $ptr) (i32.const 1)) (i32.const 91))
    (i32.store8 (i32.add (local.get $ptr) (local.get $len)) (i32.const 93))
    (i64.or (i64.shl (i64.extend_i32_u (i32.sub (local.get $ptr) (i32.const 1))) (i64.const 32))
            (i64.extend_i32_u (i32.add (local.get $len) (i32.const 2))))))
