;; Cheap in fuel, slow in wall time: grows its memory to 16 MiB and writes one byte in
;; every 4 KiB page of it (4,096 stores: ~45k fuel, milliseconds of page faults), then
;; answers {}.
(module
  (memory (export "memory") 1)
  (func (export "alloc") (param $len i32) (result i32) (i32.const 0))
  (func (export "decide") (param $ptr i32) (param $len i32) (result i64)
    (local $at i32)
    (drop (memory.grow (i32.const 255)))
    (local.set $at (i32.const 4096))
    (loop $touch
      (i32.store8 (local.get $at) (i32.const 1))
      (local.set $at (i32.add (local.get $at) (i32.const 4096)))
      (br_if $touch (i32.lt_u (local.get $at) (i32.const 16777216))))
    (i32.store8 (i32.const 0) (i32.const 123))  ;; '{'
    (i32.store8 (i32.const 1) (i32.const 125))  ;; '}'
    (i64.const 2)))
