;; A guest bug: integer division by zero.
(module
  (memory (export "memory") 1)
  (func (export "alloc") (param $len i32) (result i32) (i32.const 1024))
  (func (export "decide") (param $ptr i32) (param $len i32) (result i64)
    (i64.div_s (i64.const 1) (i64.extend_i32_u (i32.sub (local.get $len) (local.get $len))))))
