;; page_toucher.wat when its input is longer than 4 bytes (milliseconds of page faults for
;; ~45k fuel), otherwise a trivial call; answers {} either way.  A module whose cost
;; depends on its input, as many do.
(module
  (memory (export "memory") 1)
  (func (export "alloc") (param $len i32) (result i32) (i32.const 0))
  (func (export "decide") (param $ptr i32) (param $len i32) (result i64)
    (local $at i32)
    (if (i32.gt_u (local.get $len) (i32.const 4))
      (then
        (drop (memory.grow (i32.const 255)))
        (local.set $at (i32.const 4096))
        (loop $touch
          (i32.store8 (local.get $at) (i32.const 1))
          (local.set $at (i32.add (local.get $at) (i32.const 4096)))
          (br_if $touch (i32.lt_u (local.get $at) (i32.const 16777216))))))
    (i32.store8 (i32.const 0) (i32.const 123))  ;; '{'
    (i32.store8 (i32.const 1) (i32.const 125))  ;; '}'
    (i64.const 2)))
